//go:build unix && !linux

package lambdaemu

import "syscall"

// sysProcAttr puts each child in its own process group, so that freezing
// and killing reach its own children too.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
