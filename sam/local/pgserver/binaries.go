package pgserver

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ---------------------------------------------------------------------------
// Finding the binaries and the OS user.

var (
	binDirMu    sync.Mutex
	binDirFound string
)

const installHint = "install Debian's postgresql package (apt-get install postgresql)"

// findBinDir locates the directory with initdb and pg_ctl. A successful
// answer is cached for the life of the process.
func findBinDir(ctx context.Context) (string, error) {
	binDirMu.Lock()
	defer binDirMu.Unlock()
	if binDirFound != "" {
		return binDirFound, nil
	}
	dir, err := searchBinDir(ctx)
	if err != nil {
		return "", err
	}
	binDirFound = dir
	return dir, nil
}

func searchBinDir(ctx context.Context) (string, error) {
	// 1. pg_config --bindir.
	if pgConfig, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		if err == nil {
			if dir := strings.TrimSpace(string(out)); hasServerBinaries(dir) {
				return dir, nil
			}
		}
	}
	// 2. Highest-numbered /usr/lib/postgresql/*/bin.
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(matches, func(i, j int) bool {
		return versionOf(matches[i]) > versionOf(matches[j])
	})
	for _, dir := range matches {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	// 3. initdb on PATH (following symlinks to the real bin directory).
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(initdb); err == nil {
			if dir := filepath.Dir(real); hasServerBinaries(dir) {
				return dir, nil
			}
		}
		if dir := filepath.Dir(initdb); hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("pgserver: PostgreSQL server binaries (initdb, pg_ctl) not found via pg_config, /usr/lib/postgresql/*/bin or PATH; %s", installHint)
}

// versionOf turns /usr/lib/postgresql/<version>/bin into a sortable number
// (15 -> 15, 9.6 -> 9.6); unparsable versions sort last.
func versionOf(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func hasServerBinaries(dir string) bool {
	if dir == "" {
		return false
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// postgresCredential returns the credential of the postgres OS user, used
// when we are root (PostgreSQL refuses to run as root).
func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup(osUserForPostgres)
	if err != nil {
		return nil, fmt.Errorf("pgserver: running as root, and PostgreSQL refuses to run as root, but there is no %q OS user to run it as (%v); %s, which creates that user", osUserForPostgres, err, installHint)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: uid of OS user %q: %w", osUserForPostgres, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgserver: gid of OS user %q: %w", osUserForPostgres, err)
	}
	// An empty Groups list drops root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// traversable reports whether the user in cred can search dir and all of
// its parents (so that it can reach a directory created inside dir).
func traversable(dir string, cred *syscall.Credential) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		if !searchable(fi, cred) {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func searchable(fi fs.FileInfo, cred *syscall.Credential) bool {
	perm := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return perm&0o001 != 0
	}
	switch {
	case st.Uid == cred.Uid:
		return perm&0o100 != 0
	case st.Gid == cred.Gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}
