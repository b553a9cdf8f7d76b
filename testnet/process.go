package testnet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcessConfig describes a child process: a server binary started by the
// harness (a meshreg node, or CNCF Distribution in the benchmark).
type ProcessConfig struct {
	Name    string   // for messages only
	Path    string   // the binary
	Args    []string // its arguments
	Env     []string // added to the environment (after StripEnv)
	Dir     string   // working directory; "" = the caller's
	LogPath string   // stdout and stderr are appended here
	// StripEnv drops inherited variables with these prefixes, so that a
	// developer's MESHREG_* or OCI_* settings cannot change what a test runs.
	StripEnv []string
}

// Process is a started child process. Its methods may be called from any
// goroutine; one goroutine owned by the Process waits for it to exit.
type Process struct {
	cfg  ProcessConfig
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // cmd.Wait's result, valid once done is closed
}

// StartProcess starts cfg.Path and returns at once. Output goes to
// cfg.LogPath, opened for appending so that a restarted process adds to the
// same file.
func StartProcess(cfg ProcessConfig) (*Process, error) {
	if cfg.Name == "" {
		cfg.Name = cfg.Path
	}
	logf, err := os.OpenFile(cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testnet: %s: open log: %w", cfg.Name, err)
	}
	fmt.Fprintf(logf, "=== testnet %s: start %s %s\n", time.Now().Format(time.RFC3339Nano), cfg.Path, strings.Join(cfg.Args, " "))
	cmd := exec.Command(cfg.Path, cfg.Args...)
	cmd.Dir = cfg.Dir
	cmd.Env = append(filterEnv(os.Environ(), cfg.StripEnv), cfg.Env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("testnet: %s: start: %w", cfg.Name, err)
	}
	p := &Process{cfg: cfg, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(logf, "=== testnet %s: exited: %s\n", time.Now().Format(time.RFC3339Nano), p.exitString())
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func filterEnv(env, strip []string) []string {
	out := env[:0:0]
next:
	for _, kv := range env {
		for _, prefix := range strip {
			if strings.HasPrefix(kv, prefix) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// PID is the operating system's id of the process.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitErr is the result of waiting for the process: nil for exit status 0.
// It blocks until the process has exited.
func (p *Process) ExitErr() error {
	<-p.done
	return p.err
}

func (p *Process) exitString() string {
	if p.err == nil {
		return "exit status 0"
	}
	return p.err.Error()
}

// Stop sends SIGTERM and waits up to timeout for the process to exit. If it
// has not exited by then it is killed and Stop returns an error. It also
// returns an error if the process exited with a non-zero status: a graceful
// shutdown ends with status 0.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.exitResult("had already exited")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testnet: %s: SIGTERM: %w", p.cfg.Name, err)
	}
	select {
	case <-p.done:
		return p.exitResult("after SIGTERM")
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("testnet: %s (pid %d) did not exit within %v of SIGTERM; killed it", p.cfg.Name, p.PID(), timeout)
	}
}

func (p *Process) exitResult(when string) error {
	if p.err != nil {
		return fmt.Errorf("testnet: %s (pid %d) %s: %w", p.cfg.Name, p.PID(), when, p.err)
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// WaitHTTP polls url until it answers with status want, the process exits,
// or ctx ends. It returns the last status or error seen when it gives up.
func (p *Process) WaitHTTP(ctx context.Context, url string, want int) error {
	return p.WaitHTTPWith(ctx, &http.Client{Timeout: 2 * time.Second}, url, want)
}

// WaitHTTPWith is WaitHTTP with the client given (one that trusts a
// test CA, say).
func (p *Process) WaitHTTPWith(ctx context.Context, client *http.Client, url string, want int) error {
	last := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = fmt.Sprintf("GET %s: %s", url, resp.Status)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("testnet: %s exited (%s) before GET %s answered %d; last: %s",
				p.cfg.Name, p.exitString(), url, want, last)
		case <-ctx.Done():
			return fmt.Errorf("testnet: %s: GET %s did not answer %d: %w; last: %s", p.cfg.Name, url, want, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PeakRSS returns the peak resident set size of a running process in bytes
// (VmHWM in /proc/PID/status; Linux only).
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("testnet: peak RSS of %d: %w", pid, err)
	}
	return parseVmHWM(b)
}

func parseVmHWM(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != "VmHWM" {
			continue
		}
		f := strings.Fields(val) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("testnet: unexpected VmHWM line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("testnet: VmHWM: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("testnet: no VmHWM line in /proc status")
}

// TailFile returns at most the last n lines of the file at path, and whether
// it cut any.
func TailFile(path string, n int) (string, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false, err
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) <= n {
		return string(b), false, nil
	}
	return string(bytes.Join(lines[len(lines)-n:], []byte("\n"))), true, nil
}
