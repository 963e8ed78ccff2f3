// Package jobs runs one task on a fresh sandbox: QUEUED → RUNNING (the guest
// fetched its bootstrap) → COMPLETED / FAILED / TIMEOUT (the guest reported,
// or its sandbox died). A job is never left RUNNING after its sandbox is gone,
// and a non-keepalive job's sandbox is destroyed when the job ends.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/sandbox"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// Manager runs jobs.
type Manager struct {
	store *store.Store
	sb    *sandbox.Manager
}

// New builds a manager.
func New(st *store.Store, sb *sandbox.Manager) *Manager { return &Manager{store: st, sb: sb} }

func newID() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "job-" + hex.EncodeToString(b)
}

// NotFound is the API error for an unknown job.
func NotFound(id string) error {
	return api.Errorf(http.StatusNotFound, api.CodeJobNotFound, "job %q not found", id)
}

// Get returns a job.
func (m *Manager) Get(ctx context.Context, id string) (*store.Job, error) {
	j, err := m.store.Job(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, NotFound(id)
	}
	return j, err
}

// API renders a job.
func (m *Manager) API(ctx context.Context, j *store.Job) api.Job {
	out := api.Job{ID: j.ID, Team: j.Team, SandboxID: j.SandboxID, Profile: j.Profile, Repo: j.Repo, Ref: j.Ref, Task: j.Task, Status: j.Status,
		ExitCode: j.ExitCode, Error: j.Error, Keepalive: j.Keepalive, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	if sb, err := m.store.Sandbox(ctx, j.SandboxID); err == nil {
		out.Sandbox = sb.Name
	}
	return out
}

// Run records a job and requests its sandbox (named after the job).
func (m *Manager) Run(ctx context.Context, req api.RunJobRequest) (*store.Job, error) {
	if strings.TrimSpace(req.Task) == "" {
		return nil, api.FieldError("task", "is required (the command the agent runs)")
	}
	if req.Profile == "" {
		return nil, api.FieldError("profile", "is required")
	}
	team := auth.Team(ctx)
	// Refused before the job row is written.
	if err := m.sb.MayUseProfile(ctx, req.Profile, team); err != nil {
		return nil, err
	}
	keep := false
	if req.Keepalive != nil {
		keep = *req.Keepalive
	}
	ctx = auth.For(ctx, team)
	j := &store.Job{ID: newID(), Team: team, Profile: req.Profile, Repo: req.Repo, Ref: req.Ref, Task: req.Task, Status: store.JobQueued, Keepalive: keep}
	if err := m.store.CreateJob(ctx, j); err != nil {
		return nil, err
	}
	sb, _, err := m.sb.CreateForJob(ctx, api.CreateSandboxRequest{Name: j.ID, Profile: req.Profile, TTL: req.TTL, Keepalive: &keep, Workspace: req.Workspace}, j.ID)
	if err != nil {
		j.Status, j.Error = store.JobFailed, "sandbox: "+err.Error()
		_ = m.store.SaveJob(ctx, j, store.JobQueued, store.Event{Kind: "job.failed", Message: j.Error})
		return nil, err
	}
	j.SandboxID = sb.ID
	if err := m.store.SaveJob(ctx, j, store.JobQueued, store.Event{Kind: "job.queued", Message: "sandbox " + sb.Name + " requested"}); err != nil {
		return nil, err
	}
	return j, nil
}

// Started marks the job of a sandbox RUNNING (its guest fetched the bootstrap).
func (m *Manager) Started(ctx context.Context, sandboxID string) {
	j, err := m.store.JobOfSandbox(ctx, sandboxID)
	if err != nil || j.Status != store.JobQueued {
		return
	}
	j.Status = store.JobRunning
	_ = m.store.SaveJob(ctx, j, store.JobQueued, store.Event{Kind: "job.running", Message: "the guest runner started the task"})
}

// Report ends the job of a sandbox with the task's exit code (124: timeout).
func (m *Manager) Report(ctx context.Context, sandboxID string, rep api.JobReport) (*store.Job, error) {
	j, err := m.store.JobOfSandbox(ctx, sandboxID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(http.StatusNotFound, api.CodeJobNotFound, "this sandbox runs no job")
	}
	if err != nil {
		return nil, err
	}
	if store.JobFinal(j.Status) {
		return nil, api.Errorf(http.StatusConflict, api.CodeInvalidState, "job %s already ended (%s)", j.ID, j.Status)
	}
	prev := j.Status
	code := rep.ExitCode
	j.ExitCode = &code
	switch code {
	case 0:
		j.Status = store.JobCompleted
	case 124:
		j.Status, j.Error = store.JobTimeout, "the task timed out (exit 124)"
	default:
		j.Status, j.Error = store.JobFailed, fmt.Sprintf("the task exited with %d", code)
	}
	if rep.Message != "" && j.Error != "" {
		j.Error += ": " + rep.Message
	}
	if err := m.store.SaveJob(ctx, j, prev, store.Event{Kind: "job." + strings.ToLower(j.Status), Message: fmt.Sprintf("exit code %d", code)}); err != nil {
		return nil, err
	}
	m.release(j)
	return j, nil
}

// release destroys a finished non-keepalive job's sandbox in the background:
// the report that ended the job is answered without waiting for Proxmox.
func (m *Manager) release(j *store.Job) {
	if j.Keepalive || j.SandboxID == "" {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		_, _ = m.sb.Destroy(ctx, j.SandboxID, true)
	}()
}

// Cancel ends a job as FAILED and destroys its sandbox.
func (m *Manager) Cancel(ctx context.Context, id string) (*store.Job, error) {
	j, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if store.JobFinal(j.Status) {
		return j, nil
	}
	prev := j.Status
	j.Status, j.Error = store.JobFailed, "cancelled by an operator"
	if err := m.store.SaveJob(ctx, j, prev, store.Event{Kind: "job.cancelled", Message: j.Error}); err != nil {
		return nil, err
	}
	if j.SandboxID != "" {
		if _, err := m.sb.Destroy(ctx, j.SandboxID, true); err != nil && !api.IsCode(err, api.CodeSandboxNotFound) {
			return j, err
		}
	}
	return j, nil
}

// Finalize ends unfinished jobs whose sandbox is gone or failed.
func (m *Manager) Finalize(ctx context.Context) error {
	js, err := m.store.Jobs(ctx, true)
	if err != nil {
		return err
	}
	var errs []error
	for _, j := range js {
		if j.SandboxID == "" {
			continue
		}
		sb, err := m.store.Sandbox(ctx, j.SandboxID)
		status, why := "", ""
		switch {
		case errors.Is(err, store.ErrNotFound):
			status, why = store.JobFailed, "its sandbox no longer exists"
		case err != nil:
			errs = append(errs, err)
			continue
		case sb.State == api.StateTimeout || sb.State == api.StateDestroyed && strings.Contains(sb.Error, "lease expired"):
			status, why = store.JobTimeout, "its sandbox timed out: "+sb.Error
		case sb.State == api.StateFailed || sb.State == api.StateDestroyed:
			status, why = store.JobFailed, fmt.Sprintf("its sandbox is %s %s", sb.State, sb.Error)
		}
		if status == "" {
			continue
		}
		prev := j.Status
		j.Status, j.Error = status, strings.TrimSpace(why)
		if err := m.store.SaveJob(ctx, j, prev, store.Event{Kind: "job.finalized", Message: j.Error}); err != nil && !errors.Is(err, store.ErrStale) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
