package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestDoctor: with the admin role prepared as the README says, doctor
// reports the database ok, warns that PUBLIC may connect to template1 (with
// the REVOKE statement) and exits 0; once the admin loses
// pg_signal_backend, it names the GRANT to run and exits 1.
func TestDoctor(t *testing.T) {
	env := brokerEnv(t, "http://127.0.0.1:1")
	r := runCLI(t, env.cli(), "doctor")
	if r.code != 0 {
		t.Fatal(r)
	}
	for _, want := range []string{
		"orders (ephemera_admin@", "): ok\n",
		"warning: on ", "PUBLIC may CONNECT", "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.stdout, setup.AdminPassword) || strings.Contains(r.stderr, setup.AdminPassword) {
		t.Fatal("doctor printed the admin password")
	}

	ctx := context.Background()
	su, err := pgx.Connect(ctx, pg.URL())
	must(t, err)
	t.Cleanup(func() {
		if _, err := su.Exec(context.Background(), "GRANT pg_signal_backend TO ephemera_admin"); err != nil {
			t.Errorf("restoring pg_signal_backend: %v", err)
		}
		su.Close(context.Background())
	})
	_, err = su.Exec(ctx, "REVOKE pg_signal_backend FROM ephemera_admin")
	must(t, err)
	r = runCLI(t, env.cli(), "doctor")
	if r.code != 1 || !strings.Contains(r.stdout, "GRANT pg_signal_backend TO ephemera_admin;\n") {
		t.Fatalf("doctor without pg_signal_backend: want exit 1 naming the GRANT:\n%s", r)
	}
}
