// Package runner is `agentd guest run`, the program inside a sandbox: it
// fetches the bootstrap once, puts secrets in a tmpfs directory (0600), runs
// the job, uploads its artifacts and reports the exit status.
package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
)

// Options configures a run.
type Options struct {
	BootstrapFile string // /etc/agentlab/bootstrap.json
	SecretsDir    string // a tmpfs: /run/agentlab/secrets
	WorkDir       string // where the job runs
	Stdout        io.Writer
	Retries       int // bootstrap fetch attempts (the agent may be restarting)
}

// Result says what happened.
type Result struct {
	Job       string
	ExitCode  int
	Artifacts []string
}

func get(ctx context.Context, hc *http.Client, url, tok string) (*api.GuestBootstrap, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/bootstrap", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("bootstrap: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var b api.GuestBootstrap
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return &b, nil
}

// shellQuote quotes a value for an env file sourced by sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func writeSecret(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
}

// Run performs the whole guest side.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Retries == 0 {
		o.Retries = 5
	}
	raw, err := os.ReadFile(o.BootstrapFile)
	if err != nil {
		return nil, fmt.Errorf("bootstrap file: %w", err)
	}
	var bf sandbox.Bootstrap
	if err := json.Unmarshal(raw, &bf); err != nil || bf.URL == "" || bf.Token == "" {
		return nil, fmt.Errorf("bootstrap file %s: want {url, token, sandbox_id}", o.BootstrapFile)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	var b *api.GuestBootstrap
	for i := 0; ; i++ {
		b, err = get(ctx, hc, bf.URL, bf.Token)
		if err == nil || i+1 >= o.Retries || strings.Contains(err.Error(), " 401 ") || strings.Contains(err.Error(), " 403 ") {
			break
		}
		time.Sleep(time.Duration(i+1) * 500 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.SecretsDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(o.SecretsDir, 0o700); err != nil {
		return nil, err
	}
	var env bytes.Buffer
	names := make([]string, 0, len(b.Env))
	for k := range b.Env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&env, "export %s=%s\n", k, shellQuote(b.Env[k]))
	}
	if err := writeSecret(o.SecretsDir, "env", env.String()); err != nil {
		return nil, err
	}
	if len(b.SSHKeys) > 0 {
		if err := writeSecret(o.SecretsDir, "authorized_keys", strings.Join(b.SSHKeys, "\n")+"\n"); err != nil {
			return nil, err
		}
	}
	if g := b.Git; g != nil && g.Token != "" {
		host := g.Host
		if host == "" {
			host = "github.com"
		}
		user := g.Username
		if user == "" {
			user = "x-access-token"
		}
		cred := fmt.Sprintf("https://%s:%s@%s\n", url.QueryEscape(user), url.QueryEscape(g.Token), host)
		if err := writeSecret(o.SecretsDir, "git-credentials", cred); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	if b.Job == nil {
		fmt.Fprintf(o.Stdout, "agentlab: bootstrap done for %s (no job)\n", b.Name)
		return res, nil
	}
	res.Job = b.Job.ID
	code, err := runJob(ctx, o, b)
	if err != nil {
		return nil, err
	}
	res.ExitCode = code
	arts := filepath.Join(o.WorkDir, "artifacts")
	_ = filepath.WalkDir(arts, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(arts, p)
		if uerr := upload(ctx, hc, b, filepath.ToSlash(rel), p); uerr != nil {
			fmt.Fprintf(o.Stdout, "agentlab: upload %s: %v\n", rel, uerr)
			return nil
		}
		res.Artifacts = append(res.Artifacts, filepath.ToSlash(rel))
		return nil
	})
	if err := upload(ctx, hc, b, api.JobLogName, filepath.Join(o.WorkDir, api.JobLogName)); err == nil {
		res.Artifacts = append(res.Artifacts, api.JobLogName)
	}
	rep, _ := json.Marshal(api.JobReport{ExitCode: code})
	req, _ := http.NewRequestWithContext(ctx, "POST", b.ReportURL, bytes.NewReader(rep))
	req.Header.Set("Authorization", "Bearer "+b.ArtifactToken)
	resp, err := hc.Do(req)
	if err != nil {
		return res, fmt.Errorf("report: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		return res, fmt.Errorf("report: %s: %s", resp.Status, body)
	}
	return res, nil
}

// runJob clones the repository if any and runs the task with the secrets in
// its environment; its output goes to the console and agentlab-job.log.
func runJob(ctx context.Context, o Options, b *api.GuestBootstrap) (int, error) {
	if err := os.MkdirAll(filepath.Join(o.WorkDir, "artifacts"), 0o755); err != nil {
		return 0, err
	}
	logf, err := os.Create(filepath.Join(o.WorkDir, api.JobLogName))
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	out := io.MultiWriter(o.Stdout, logf)
	dir := o.WorkDir
	env := append(os.Environ(), "AGENTLAB_JOB="+b.Job.ID, "AGENTLAB_SANDBOX="+b.Name,
		"AGENTLAB_ARTIFACTS="+filepath.Join(o.WorkDir, "artifacts"), "AGENTLAB_SECRETS_DIR="+o.SecretsDir)
	for k, v := range b.Env {
		env = append(env, k+"="+v)
	}
	if b.Job.Repo != "" {
		dir = filepath.Join(o.WorkDir, "repo")
		args := []string{"clone", "--depth", "1"}
		if b.Job.Ref != "" {
			args = append(args, "--branch", b.Job.Ref)
		}
		clone := exec.CommandContext(ctx, "git", append(args, b.Job.Repo, dir)...)
		clone.Stdout, clone.Stderr, clone.Env = out, out, env
		if _, err := os.Stat(filepath.Join(o.SecretsDir, "git-credentials")); err == nil {
			clone.Env = append(clone.Env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=credential.helper",
				"GIT_CONFIG_VALUE_0=store --file="+filepath.Join(o.SecretsDir, "git-credentials"))
		}
		if err := clone.Run(); err != nil {
			fmt.Fprintf(out, "agentlab: git clone failed: %v\n", err)
			return 128, nil
		}
	}
	cmd := exec.CommandContext(ctx, "bash", "-c", b.Job.Task)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	}
	return 0, err
}

func upload(ctx context.Context, hc *http.Client, b *api.GuestBootstrap, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	req, _ := http.NewRequestWithContext(ctx, "POST", b.ArtifactURL+"?name="+url.QueryEscape(name), f)
	req.Header.Set("Authorization", "Bearer "+b.ArtifactToken)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
