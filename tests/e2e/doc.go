// Package e2e holds ephemera's end-to-end tests. They run the real binaries
// (the extension, built as it ships in the layer, and the demo function, a
// lambda.norpc custom runtime) under the Lambda emulator against the whole
// local system of sam/local/stack: a throwaway PostgreSQL, the STS
// emulator and the broker on a loopback port. One stack serves the whole
// package; the binaries are built once, in TestMain (sam/local/gobuild).
// Every test passes alone and in any order (-shuffle=on); after the last
// one, TestMain looks for every password the broker issued in everything
// the sandboxes, the broker and PostgreSQL wrote, and fails the package if
// one is there.
//
// Run them with
//
//	go test ./tests/... -count=1 -v
//
// They need the PostgreSQL server binaries (see sam/local/pgserver) or
// EPHEMERA_TEST_DATABASE_URL, and never skip.
package e2e
