package lambdaemu

import "syscall"

// sysProcAttr puts each child in its own process group (so that freezing
// and killing reach its own children too) and has the kernel kill it if
// the emulator dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
