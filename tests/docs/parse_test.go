package docs

import "testing"

// TestParse: fences in list items lose their indentation, the tag is the
// word after the language, and an unclosed fence is an error.
func TestParse(t *testing.T) {
	doc := "text\n\n1. step\n\n   ```sh run\n   echo one\n     echo two\n   ```\n\n```sql\nSELECT 1;\n```\n"
	got, err := parse("x.md", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d blocks, want 2", len(got))
	}
	if s := got[0]; s.lang != "sh" || s.tag != "run" || s.line != 5 || s.body != "echo one\n  echo two\n" {
		t.Errorf("first block = %+v", s)
	}
	if s := got[1]; s.lang != "sql" || s.tag != "" || s.body != "SELECT 1;\n" {
		t.Errorf("second block = %+v", s)
	}
	if _, err := parse("x.md", []byte("```sh\necho\n")); err == nil {
		t.Error("an unclosed fence parsed")
	}
}
