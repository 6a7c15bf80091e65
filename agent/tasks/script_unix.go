package tasks

import (
	"os/exec"
	"syscall"
)

// setProcessGroup runs the command in its own process group, and has a
// cancel kill the whole group: a script's children die with it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
