package pgserver

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// A test binary that is killed (go test -timeout, Ctrl-C, SIGKILL) never
// calls Stop, and the postmaster, which pg_ctl detaches, keeps running with
// its directory (in memory, if that is /dev/shm). So every server directory
// records its owning process, and the first Start in a process stops and
// deletes the servers whose owner is gone.

const (
	serverDirPrefix = "pgserver-"
	ownerFileName   = "owner"
)

var reapOnce sync.Once

// writeOwnerFile records the current process (pid and start time, against
// pid reuse) as the owner of the server directory dir.
func writeOwnerFile(dir string) error {
	pid := os.Getpid()
	return os.WriteFile(filepath.Join(dir, ownerFileName), []byte(strconv.Itoa(pid)+" "+procStartTime(pid)+"\n"), 0o644)
}

// procStartTime returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat), or "" if unknown.
func procStartTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19] // field 22 overall
}

// ownerAlive reports whether the process recorded in an owner file still
// runs. When in doubt it says yes.
func ownerAlive(content string) bool {
	fields := strings.Fields(content)
	if len(fields) == 0 {
		return true
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return true
	}
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return false
	}
	if len(fields) > 1 {
		if start := procStartTime(pid); start != "" && start != fields[1] {
			return false // the pid now belongs to another process
		}
	}
	return true
}

// reapOrphansOnce runs reapOrphans the first time it is called.
func reapOrphansOnce(base, bindir string, cred *syscall.Credential, log *slog.Logger) {
	reapOnce.Do(func() { reapOrphans(base, bindir, cred, log) })
}

// reapOrphans stops and deletes the servers in base, belonging to the same
// OS user, whose owning process has exited.
func reapOrphans(base, bindir string, cred *syscall.Credential, log *slog.Logger) {
	uid := uint32(os.Geteuid())
	if cred != nil {
		uid = cred.Uid
	}
	dirs, _ := filepath.Glob(filepath.Join(base, serverDirPrefix+"[0-9]*"))
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
			continue
		}
		owner, err := os.ReadFile(filepath.Join(dir, ownerFileName))
		if err != nil || ownerAlive(string(owner)) {
			continue // not ours to judge, or still in use
		}
		s := &Server{log: log, dir: dir, dataDir: filepath.Join(dir, "data"), bindir: bindir, cred: cred}
		stopErr := s.stopPostmaster()
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("pgserver: could not delete an orphaned server", "dir", dir, "err", err, "stop_err", stopErr)
			continue
		}
		log.Warn("pgserver: stopped and deleted a server whose process had exited without Stop", "dir", dir, "stop_err", stopErr)
	}
}

// isPostmasterOf reports whether pid is a postgres process serving dataDir
// (so that a stale postmaster.pid never makes us kill another process).
func isPostmasterOf(pid int, dataDir string) bool {
	if pid <= 1 {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(exe) != "postgres" {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		if string(arg) == dataDir {
			return true
		}
	}
	return false
}
