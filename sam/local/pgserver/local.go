package pgserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ---------------------------------------------------------------------------
// Throwaway mode.

func startLocal(ctx context.Context, opts Options, log *slog.Logger) (_ *Server, retErr error) {
	began := time.Now()
	bindir, err := findBinDir(ctx)
	if err != nil {
		return nil, err
	}

	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred, err = postgresCredential()
		if err != nil {
			return nil, err
		}
	}

	base, err := chooseBase(cred)
	if err != nil {
		return nil, err
	}
	reapOrphansOnce(base, bindir, cred, log)
	dir, err := os.MkdirTemp(base, serverDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgserver: create temporary directory: %w", err)
	}
	if err := writeOwnerFile(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgserver: write owner file: %w", err)
	}

	password, err := randomHex(24)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgserver: generate password: %w", err)
	}
	s := &Server{
		log:      log,
		host:     loopback,
		database: defaultDatabase,
		password: password,
		base:     base,
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		logFile:  filepath.Join(dir, "server.log"),
		bindir:   bindir,
		cred:     cred,
	}
	defer func() {
		if retErr != nil {
			if err := s.Stop(); err != nil {
				log.Warn("pgserver: cleanup after failed start", "err", err)
			}
			retErr = s.redact(retErr)
		}
	}()

	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgserver: hand %s to the %q OS user: %w", dir, osUserForPostgres, err)
		}
	}

	// Prefer a copy of the cached initdb result (much faster than initdb,
	// especially on a busy machine); fall back to a fresh initdb.
	t0 := time.Now()
	s.fromTemplate = s.dataFromTemplate(ctx)
	if !s.fromTemplate {
		if err := s.initdb(ctx); err != nil {
			return nil, err
		}
	}
	t1 := time.Now()
	err = s.startServer(ctx, opts)
	if err == nil && s.fromTemplate {
		err = s.setSuperuserPassword(ctx)
	}
	if err != nil && s.fromTemplate && ctx.Err() == nil {
		log.Warn("pgserver: starting from the cached template failed; falling back to initdb", "err", s.redact(err))
		s.fromTemplate = false
		_ = s.stopPostmaster()
		if err := errors.Join(os.RemoveAll(s.dataDir), removeIfExists(s.logFile)); err != nil {
			return nil, fmt.Errorf("pgserver: clean up after failed start: %w", err)
		}
		err = s.initdb(ctx)
		if err == nil {
			err = s.startServer(ctx, opts)
		}
	}
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	if err := s.verify(ctx); err != nil {
		return nil, err
	}
	t3 := time.Now()
	log.Info("pgserver: started", "port", s.port, "dir", s.dir, "bindir", bindir,
		"from_template", s.fromTemplate,
		"elapsed", t3.Sub(began).Round(time.Millisecond),
		"prepare_data", t1.Sub(t0).Round(time.Millisecond),
		"pg_ctl_start", t2.Sub(t1).Round(time.Millisecond),
		"verify", t3.Sub(t2).Round(time.Millisecond))
	return s, nil
}

// minShmFree is how much free space /dev/shm needs to be used.
const minShmFree = 1 << 30

// chooseBase picks the parent directory for the server's directory (and
// the initdb template). Creating the thousand files of a data directory is
// the slowest part of a start, and several times faster on tmpfs, so a
// roomy tmpfs /dev/shm is preferred, unless TMPDIR is set explicitly;
// otherwise os.TempDir() (or /tmp, if the postgres OS user cannot reach
// os.TempDir()).
func chooseBase(cred *syscall.Credential) (string, error) {
	if os.Getenv("TMPDIR") == "" && roomyTmpfs("/dev/shm", cred) {
		return "/dev/shm", nil
	}
	base := os.TempDir()
	if cred != nil && !traversable(base, cred) {
		base = "/tmp"
		if !traversable(base, cred) {
			return "", fmt.Errorf("pgserver: running as root, but neither %s nor /tmp is accessible to the %q OS user", os.TempDir(), osUserForPostgres)
		}
	}
	return base, nil
}

// roomyTmpfs reports whether dir is a world-writable, sticky tmpfs with at
// least minShmFree bytes free (Docker's default 64 MB /dev/shm is not), and
// reachable by cred's user.
func roomyTmpfs(dir string, cred *syscall.Credential) bool {
	const tmpfsMagic = 0x01021994
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || int64(st.Type) != tmpfsMagic {
		return false
	}
	if uint64(st.Bavail)*uint64(st.Bsize) < minShmFree {
		return false
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() || fi.Mode()&(fs.ModeSticky|0o777) != fs.ModeSticky|0o777 {
		return false
	}
	return cred == nil || traversable(dir, cred)
}

// initdb creates s.dataDir with a fresh initdb and the instance's password.
func (s *Server) initdb(ctx context.Context) error {
	pwfile := filepath.Join(s.dir, "pwfile")
	if err := writeOwnedFile(pwfile, s.password+"\n", s.cred); err != nil {
		return fmt.Errorf("pgserver: write password file: %w", err)
	}
	defer os.Remove(pwfile)
	return runInitdb(ctx, s.bindir, s.cred, s.dir, s.dataDir, pwfile)
}

// runInitdb runs initdb for dataDir, with the superuser password read from
// pwfile, in workDir.
func runInitdb(ctx context.Context, bindir string, cred *syscall.Credential, workDir, dataDir, pwfile string) error {
	// Output is captured and only shown on failure, so --no-instructions
	// (PostgreSQL >= 14 only) is not needed.
	out, err := runTool(ctx, bindir, cred, workDir, "initdb",
		"-D", dataDir,
		"-U", superuser,
		"--pwfile", pwfile,
		"--auth-host=scram-sha-256",
		"--auth-local=scram-sha-256",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
	)
	if err != nil {
		return fmt.Errorf("pgserver: initdb failed: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeOwnedFile writes a 0600 file, owned by cred's user if cred is set.
func writeOwnedFile(path, content string, cred *syscall.Credential) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.Remove(path)
			return err
		}
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (s *Server) startServer(ctx context.Context, opts Options) error {
	maxConns := opts.MaxConnections
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("pgserver: pick a free port: %w", err)
		}
		settings := []string{
			"listen_addresses=" + loopback,
			"unix_socket_directories=" + s.dir,
			"max_connections=" + strconv.Itoa(maxConns),
			"password_encryption=scram-sha-256",
			"shared_buffers=32MB",
		}
		if !opts.Durable {
			settings = append(settings, "fsync=off", "synchronous_commit=off", "full_page_writes=off")
		}
		if opts.LogStatements {
			settings = append(settings, "log_statement=all")
		}
		// pg_ctl passes -o through /bin/sh, so every word is quoted.
		words := []string{"-p", strconv.Itoa(port)}
		for _, kv := range settings {
			words = append(words, "-c", kv)
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = shellQuote(w)
		}
		out, err := s.run(ctx, "pg_ctl",
			"-D", s.dataDir,
			"-l", s.logFile,
			"-w", "-t", "30",
			"-o", strings.Join(quoted, " "),
			"start",
		)
		if err == nil {
			s.port = port
			return nil
		}
		tail := s.logTail()
		lastErr = fmt.Errorf("pgserver: pg_ctl start failed (port %d): %w\n%s\nserver log tail:\n%s",
			port, err, strings.TrimSpace(string(out)), tail)
		if ctx.Err() != nil || !portClash(tail) {
			return lastErr
		}
		s.log.Warn("pgserver: port taken, retrying with another one", "port", port, "attempt", attempt)
		// Start the next attempt with a clean log so its tail is meaningful.
		_ = os.Remove(s.logFile)
	}
	return lastErr
}

func (s *Server) verify(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return fmt.Errorf("pgserver: connect to fresh server: %w\nserver log tail:\n%s", err, s.logTail())
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("pgserver: query fresh server: %w\nserver log tail:\n%s", err, s.logTail())
	}
	return nil
}

func (s *Server) stopLocal() error {
	var errs []error
	if err := s.stopPostmaster(); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("pgserver: remove %s: %w", s.dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return s.redact(err)
	}
	s.log.Info("pgserver: stopped", "port", s.port, "dir", s.dir)
	return nil
}

// stopPostmaster stops the server if it is running (immediate shutdown: the
// data is thrown away anyway).
func (s *Server) stopPostmaster() error {
	pidData, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return nil // never started, or already stopped
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, err := s.run(ctx, "pg_ctl", "-D", s.dataDir, "-m", "immediate", "-w", "stop")
	if err == nil {
		return nil
	}
	// Last resort: kill the postmaster we started, so that it does not
	// outlive its deleted directory.
	line, _, _ := strings.Cut(string(pidData), "\n")
	if pid, perr := strconv.Atoi(strings.TrimSpace(line)); perr == nil && isPostmasterOf(pid, s.dataDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return fmt.Errorf("pgserver: pg_ctl stop failed: %w\n%s", err, strings.TrimSpace(string(out)))
}

// run runs one of the server binaries in the server's directory.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return runTool(ctx, s.bindir, s.cred, s.dir, name, args...)
}

// runTool runs one of the server binaries in workDir, as cred's user when
// cred is set, and returns its combined output.
func runTool(ctx context.Context, bindir string, cred *syscall.Credential, workDir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(bindir, name), args...)
	cmd.Dir = workDir
	cmd.Env = childEnv()
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// The postmaster started by pg_ctl does not keep our pipes open, but
	// never hang on them if something else does.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// logTail returns the last few KiB of the server log, for error messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(string(b))
}

func portClash(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not bind") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, err
	}
	return port, nil
}

// childEnv is the environment for initdb and pg_ctl: ours minus PG*
// variables (which could redirect the tools elsewhere), with C messages.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
