package pgserver

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// initdb is the slow part of a start (0.5-0.7 s on an idle machine, several
// seconds when tests of many packages run in parallel). So initdb runs once
// into a template directory, <base>/pgserver-template-<uid>-<hash> (base as
// chosen by chooseBase), which is never started and is shared by all
// processes of the same OS user;
// every Start copies its data directory (a fraction of initdb's cost), starts
// the copy and immediately replaces the template's superuser password with
// the instance's own random password. Any problem with the template makes
// Start fall back to a plain initdb.

// templateFormat is part of the template's cache key; change it whenever
// the initdb arguments change.
const templateFormat = "pgserver-template-v1"

type template struct {
	root     string
	dataDir  string
	password string // superuser password baked into the template
}

var (
	templateMu    sync.Mutex
	templateCache = map[string]*template{}
)

// dataFromTemplate fills s.dataDir from the template, creating the
// template first if needed. It reports whether it succeeded.
func (s *Server) dataFromTemplate(ctx context.Context) bool {
	tmpl, err := getTemplate(ctx, s.bindir, s.cred, s.base, s.log)
	if err != nil {
		s.log.Warn("pgserver: no usable initdb template; running initdb", "err", err)
		return false
	}
	s.secrets = append(s.secrets, tmpl.password)
	if err := copyTree(tmpl.dataDir, s.dataDir, s.cred); err != nil {
		s.log.Warn("pgserver: copying the initdb template failed; running initdb", "template", tmpl.root, "err", err)
		if err := os.RemoveAll(s.dataDir); err != nil {
			s.log.Warn("pgserver: remove partial copy", "err", err)
		}
		return false
	}
	s.bootstrapPassword = tmpl.password
	return true
}

// setSuperuserPassword replaces the template's superuser password with the
// instance's password. Only the SCRAM verifier is sent, and the session
// does not log statements.
func (s *Server) setSuperuserPassword(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(s.ConnString(superuser, s.bootstrapPassword, defaultDatabase))
	if err != nil {
		return fmt.Errorf("pgserver: internal connection string: %w", err)
	}
	cfg.RuntimeParams["log_statement"] = "none"
	cfg.RuntimeParams["log_min_error_statement"] = "panic"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pgserver: connect with the template password: %w\nserver log tail:\n%s", err, s.logTail())
	}
	defer conn.Close(context.WithoutCancel(ctx))
	verifier, err := scramVerifier(s.password)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "ALTER ROLE "+superuser+" PASSWORD '"+verifier+"'"); err != nil {
		return fmt.Errorf("pgserver: set the superuser password: %w", err)
	}
	return nil
}

// scramVerifier computes PostgreSQL's SCRAM-SHA-256 verifier for password,
// as password_encryption=scram-sha-256 would store it.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("pgserver: generate salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("pgserver: derive key: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	storedKey := sha256.Sum256(mac(salted, "Client Key"))
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

// getTemplate returns the template for bindir, creating it if needed.
func getTemplate(ctx context.Context, bindir string, cred *syscall.Credential, base string, log *slog.Logger) (*template, error) {
	templateMu.Lock()
	defer templateMu.Unlock()

	uid := uint32(os.Geteuid())
	gid := uint32(os.Getegid())
	if cred != nil {
		uid, gid = cred.Uid, cred.Gid
	}
	key, err := templateKey(bindir, uid)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(base, "pgserver-template-"+key)
	if t := templateCache[root]; t != nil {
		if _, err := os.Stat(filepath.Join(t.dataDir, "global", "pg_control")); err == nil {
			return t, nil
		}
		delete(templateCache, root)
	}
	t, err := loadTemplate(root, uid)
	if err == nil {
		templateCache[root] = t
		return t, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err // something is there but unusable: leave it alone
	}

	// Build the template in a private directory and publish it atomically.
	build, err := os.MkdirTemp(base, "pgserver-template-build-")
	if err != nil {
		return nil, fmt.Errorf("create template build directory: %w", err)
	}
	defer os.RemoveAll(build) // gone after a successful rename
	if cred != nil {
		if err := os.Chown(build, int(uid), int(gid)); err != nil {
			return nil, fmt.Errorf("chown template build directory: %w", err)
		}
	}
	password, err := randomHex(24)
	if err != nil {
		return nil, fmt.Errorf("generate template password: %w", err)
	}
	pwfile := filepath.Join(build, "password")
	if err := writeOwnedFile(pwfile, password+"\n", cred); err != nil {
		return nil, fmt.Errorf("write template password: %w", err)
	}
	if err := runInitdb(ctx, bindir, cred, build, filepath.Join(build, "data"), pwfile); err != nil {
		return nil, err
	}
	if err := os.Rename(build, root); err != nil {
		// Another process may have published its template first.
		if t, lerr := loadTemplate(root, uid); lerr == nil {
			templateCache[root] = t
			return t, nil
		}
		return nil, fmt.Errorf("publish template: %w", err)
	}
	log.Info("pgserver: created initdb template", "dir", root)
	t, err = loadTemplate(root, uid)
	if err != nil {
		return nil, err
	}
	templateCache[root] = t
	return t, nil
}

// templateKey identifies a template: the same binaries (by path, size and
// modification time), OS user, time zone (initdb records it) and format.
func templateKey(bindir string, uid uint32) (string, error) {
	real, err := filepath.EvalSymlinks(bindir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%s\x00", templateFormat, real, uid, os.Getenv("TZ"))
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(real, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", name, fi.Size(), fi.ModTime().UnixNano())
	}
	return fmt.Sprintf("%d-%x", uid, h.Sum(nil)[:8]), nil
}

// loadTemplate checks that root is a complete template owned by uid and
// private to it. A missing template yields an error wrapping fs.ErrNotExist.
func loadTemplate(root string, uid uint32) (*template, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return nil, err
	}
	if err := checkPrivate(root, fi, uid, true); err != nil {
		return nil, err
	}
	pwPath := filepath.Join(root, "password")
	pfi, err := os.Lstat(pwPath)
	if err != nil {
		return nil, fmt.Errorf("template %s is incomplete: %w", root, noLongerNotExist(err))
	}
	if err := checkPrivate(pwPath, pfi, uid, false); err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(pwPath)
	if err != nil {
		return nil, noLongerNotExist(err)
	}
	dataDir := filepath.Join(root, "data")
	if _, err := os.Stat(filepath.Join(dataDir, "global", "pg_control")); err != nil {
		return nil, fmt.Errorf("template %s is incomplete: %w", root, noLongerNotExist(err))
	}
	password := strings.TrimSpace(string(pw))
	if password == "" {
		return nil, fmt.Errorf("template %s has an empty password file", root)
	}
	return &template{root: root, dataDir: dataDir, password: password}, nil
}

// noLongerNotExist hides fs.ErrNotExist inside an existing template, so that
// getTemplate does not try to build over it.
func noLongerNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New(err.Error())
	}
	return err
}

func checkPrivate(path string, fi fs.FileInfo, uid uint32, wantDir bool) error {
	if wantDir && !fi.IsDir() || !wantDir && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s has unexpected type %v", path, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != uid {
		return fmt.Errorf("%s is not owned by uid %d", path, uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is accessible to other users (mode %v)", path, fi.Mode().Perm())
	}
	return nil
}

func copyFile(src, dst string, perm fs.FileMode, cred *syscall.Credential) (retErr error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err := out.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if cred != nil {
		if err := out.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	_, err = io.Copy(out, in)
	return err
}

// copyTree copies the directory tree src to dst (which must not exist),
// keeping permissions, and hands everything to cred's user if cred is set.
// Only directories and regular files are supported.
func copyTree(src, dst string, cred *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
			if cred != nil {
				return os.Chown(target, int(cred.Uid), int(cred.Gid))
			}
			return nil
		case d.Type().IsRegular():
			return copyFile(path, target, info.Mode().Perm(), cred)
		default:
			return fmt.Errorf("unexpected file type %v at %s", d.Type(), path)
		}
	})
}
