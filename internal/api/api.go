// Package api holds agentd's wire types and error codes: the one definition
// shared by the server, the CLI client and the Terraform provider.
package api

import (
	"errors"
	"fmt"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// State is a sandbox lifecycle state.
type State string

// Sandbox states. RUNNING means the VM is up with an address; READY is the
// instant between "guest answered" and "handed over".
const (
	StateRequested    State = "REQUESTED"
	StateProvisioning State = "PROVISIONING"
	StateBooting      State = "BOOTING"
	StateReady        State = "READY"
	StateRunning      State = "RUNNING"
	StateStopped      State = "STOPPED"
	StateSuspended    State = "SUSPENDED"
	StateCompleted    State = "COMPLETED"
	StateFailed       State = "FAILED"
	StateTimeout      State = "TIMEOUT"
	// StateDestroying: a destroy is accepted and journaled; the VM is being
	// removed (a restart resumes it).
	StateDestroying State = "DESTROYING"
	StateDestroyed  State = "DESTROYED"
	// StateLost: the VM at the sandbox's VMID failed the ownership proof
	// (deleted and reused, or changed out of band). agentd touches it no more;
	// destroy --force retires the row.
	StateLost State = "LOST"
	// StatePooled: a warm-pool member, booted with its guest agent answering
	// on an address agentd assigned, holding no secret, token or lease; a
	// create of its profile claims it (POOLED → PROVISIONING, step claim).
	StatePooled State = "POOLED"
)

// States lists every state in lifecycle order.
var States = []State{StateRequested, StateProvisioning, StateBooting, StateReady, StateRunning,
	StateStopped, StateSuspended, StateCompleted, StateFailed, StateTimeout, StateLost, StatePooled, StateDestroying, StateDestroyed}

// transitions is the one table of allowed state changes; error messages and
// the store's compare-and-set both read it.
var transitions = map[State][]State{
	StateRequested:    {StateProvisioning, StateFailed, StateTimeout, StateDestroying, StateDestroyed},
	StateProvisioning: {StateBooting, StateFailed, StateTimeout, StateDestroying, StateDestroyed},
	StateBooting:      {StateReady, StatePooled, StateFailed, StateTimeout, StateStopped, StateLost, StateDestroying, StateDestroyed},
	StateReady:        {StateRunning, StateFailed, StateStopped, StateTimeout, StateLost, StateDestroying, StateDestroyed},
	StateRunning:      {StateStopped, StateSuspended, StateCompleted, StateFailed, StateTimeout, StateLost, StateDestroying, StateDestroyed},
	StateStopped:      {StateBooting, StateFailed, StateTimeout, StateLost, StateDestroying, StateDestroyed},
	// A hibernated sandbox resumes through the start path (BOOTING).
	StateSuspended: {StateBooting, StateRunning, StateStopped, StateTimeout, StateLost, StateDestroying, StateDestroyed},
	StateCompleted: {StateStopped, StateLost, StateDestroying, StateDestroyed},
	StateFailed:    {StateLost, StateDestroying, StateDestroyed},
	StateTimeout:   {StateLost, StateDestroying, StateDestroyed},
	// A sandbox LOST because its node went offline comes back when the
	// node does (the node_offline steps only; a failed proof is never undone):
	// FAILED when its provisioning had not finished.
	StateLost: {StateBooting, StateStopped, StateFailed, StateDestroying, StateDestroyed},
	// A claim takes the pooled VM back into provisioning (its claim step);
	// a replaced or unhealthy member is destroyed.
	StatePooled:     {StateProvisioning, StateFailed, StateLost, StateDestroying, StateDestroyed},
	StateDestroying: {StateLost, StateDestroyed},
	StateDestroyed:  nil,
}

// CanTransition reports whether from → to is allowed.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// InFlight reports whether provisioning or a start is still under way.
func (s State) InFlight() bool {
	return s == StateRequested || s == StateProvisioning || s == StateBooting || s == StateReady
}

// Settling reports whether agentd is still working on the sandbox: in
// flight, or being destroyed. Clients wait while it holds.
func (s State) Settling() bool { return s.InFlight() || s == StateDestroying }

// Terminal reports whether the sandbox can only be destroyed.
func (s State) Terminal() bool {
	return s == StateFailed || s == StateTimeout || s == StateLost || s == StateDestroying || s == StateDestroyed
}

// Sandbox is a sandbox as the API returns it.
type Sandbox struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	Team           string     `json:"team,omitempty"`
	Profile        string     `json:"profile"`
	State          State      `json:"state"`
	VMID           int        `json:"vmid,omitempty"`
	Node           string     `json:"node,omitempty"`
	IP             string     `json:"ip,omitempty"`
	Workspace      string     `json:"workspace,omitempty"`
	Keepalive      bool       `json:"keepalive"`
	TTLSeconds     int64      `json:"ttl_seconds"`
	Tags           []string   `json:"tags"`
	Step           string     `json:"step,omitempty"`
	Error          string     `json:"error,omitempty"`
	LeaseExpiresAt *time.Time `json:"lease_expires_at,omitempty"`
	LastUsedAt     *time.Time `json:"last_used_at,omitempty"`
	// PausedAt is when the sandbox was hibernated (SUSPENDED); its lease
	// clock stands still from then until the resume, unless the agent's
	// lease_counts_while_paused says otherwise.
	PausedAt *time.Time `json:"paused_at,omitempty"`
	// Cores and MemoryMB are the VM's as Proxmox has them configured (a
	// change pending until the next start included): set at create, read
	// back by resize, and by reconcile after a change made outside agentd.
	// 0 for a sandbox whose VM has not been configured or read yet.
	Cores     int       `json:"cores,omitempty"`
	MemoryMB  int       `json:"memory_mb,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// CreateSandboxRequest asks for a sandbox. TTL is a Go duration ("2h"); empty
// takes the profile's default, "0" means no lease.
type CreateSandboxRequest struct {
	Name      string   `json:"name"`
	Profile   string   `json:"profile"`
	TTL       string   `json:"ttl,omitempty"`
	Keepalive *bool    `json:"keepalive,omitempty"`
	Workspace string   `json:"workspace,omitempty"`
	Tags      []string `json:"tags,omitempty"`
	// Cores and MemoryMB override the profile's resources (0: the profile's).
	Cores    int `json:"cores,omitempty"`
	MemoryMB int `json:"memory_mb,omitempty"`
	// Node pins the sandbox to one cluster node ("": agentd places it).
	Node string `json:"node,omitempty"`
}

// DestroyRequest destroys a sandbox; Force also handles sandboxes that are
// still provisioning, stuck, or whose VM is already gone.
type DestroyRequest struct {
	Force bool `json:"force,omitempty"`
}

// RenewRequest sets the lease to now + TTL.
type RenewRequest struct {
	TTL string `json:"ttl"`
}

// PruneResult lists what prune destroyed and what it refused.
type PruneResult struct {
	// DryRun: Destroyed and Orphans list what would be destroyed.
	DryRun    bool           `json:"dry_run,omitempty"`
	Destroyed []Sandbox      `json:"destroyed"`
	Skipped   []PruneSkipped `json:"skipped"`
	Orphans   []Orphan       `json:"orphans_destroyed,omitempty"`
	Kept      []Orphan       `json:"orphans_kept,omitempty"`
}

// PruneSkipped is a sandbox prune left alone, with the reason.
type PruneSkipped struct {
	Sandbox Sandbox `json:"sandbox"`
	Reason  string  `json:"reason"`
}

// SandboxList is the list response. List responses hold one page: Next,
// when set, is the after= of the next page.
type SandboxList struct {
	Sandboxes []Sandbox `json:"sandboxes"`
	Next      string    `json:"next,omitempty"`
}

// Event is one recorded transition or operator action.
type Event struct {
	ID        int64     `json:"id"`
	Time      time.Time `json:"time"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	Sandbox   string    `json:"sandbox,omitempty"` // name at the time
	Workspace string    `json:"workspace,omitempty"`
	Session   string    `json:"session,omitempty"`
	Kind      string    `json:"kind"`
	Message   string    `json:"message"`
	From      State     `json:"from,omitempty"`
	To        State     `json:"to,omitempty"`
	// Team owns the object the event is about ("" for host-wide events);
	// Actor is who caused it: "token:<team>/<name>", "socket:<uid>", or
	// "agentd" for the agent's own work.
	Team  string `json:"team,omitempty"`
	Actor string `json:"actor,omitempty"`
}

// EventList is the events response; Last is the id to pass as after= next,
// and More says that more events than the page held follow it.
type EventList struct {
	Events []Event `json:"events"`
	Last   int64   `json:"last"`
	More   bool    `json:"more"`
}

// Profile is a sandbox template as the API shows it.
type Profile struct {
	Name         string `json:"name"`
	Description  string `json:"description,omitempty"`
	TemplateVMID int    `json:"template_vmid"`
	// Template is the template's name, resolved on each node (0 VMID).
	Template          string `json:"template,omitempty"`
	Cores             int    `json:"cores"`
	MemoryMB          int    `json:"memory_mb"`
	Balloon           int    `json:"balloon_mb"`
	RootSizeGB        int    `json:"root_size_gb"`
	Storage           string `json:"storage,omitempty"`
	Clone             string `json:"clone"`
	Bridge            string `json:"bridge"`
	NetworkMode       string `json:"network_mode"`
	TTLDefault        string `json:"ttl_default"`
	Keepalive         bool   `json:"keepalive"`
	IdleStopMinutes   int    `json:"idle_stop_minutes"`
	WorkspaceRequired bool   `json:"workspace_required"`
	// The profile's own limits; 0 means the agent's configuration applies.
	MaxTTLSeconds int64 `json:"max_ttl_seconds,omitempty"`
	MaxSandboxes  int   `json:"max_sandboxes,omitempty"`
	// CleanSnapshot: sandboxes get the "clean" snapshot sandbox revert uses.
	CleanSnapshot bool `json:"clean_snapshot"`
	// IdleAction is what idle stop does to an idle sandbox: stop or hibernate.
	IdleAction string `json:"idle_action"`
	Source     string `json:"source"`
	// Teams may use the profile; empty: every team.
	Teams []string `json:"teams,omitempty"`
	// OnNodeLost: keep or recreate a sandbox whose node went offline.
	OnNodeLost string `json:"on_node_lost"`
}

// ProfileList is the profiles response.
type ProfileList struct {
	Profiles []Profile `json:"profiles"`
}

// Status is the host status.
type Status struct {
	Version string `json:"version"`
	Node    string `json:"node"`
	// InstanceID is written into every VM this installation creates.
	InstanceID string                `json:"instance_id"`
	Sandboxes  map[State]int         `json:"sandboxes"`
	Proxmox    ProxmoxStatus         `json:"proxmox"`
	Profiles   []string              `json:"profiles"`
	StartedAt  time.Time             `json:"started_at"`
	Loops      map[string]LoopStatus `json:"loops,omitempty"`
	// IdleStop says why idle auto-stop is not acting, when it is not.
	IdleStop string  `json:"idle_stop,omitempty"`
	SSH      SSHInfo `json:"ssh"`
	// Caller is who asked: what the token (or the socket) is and may do.
	Caller Caller `json:"caller"`
	// Nodes are the cluster nodes agentd uses, as its last inventory
	// (reconcile's) saw them; global callers only.
	Nodes []Node `json:"nodes,omitempty"`
}

// Caller describes the principal of a request. Sandboxes counts only its
// team's when Team is set.
type Caller struct {
	Actor string `json:"actor"`
	Team  string `json:"team,omitempty"` // "" for a global principal
	Role  string `json:"role"`
	// ActingIn is the team a global principal selected (Agentlab-Team).
	ActingIn string `json:"acting_in,omitempty"`
}

// SSHInfo tells an ssh client how to reach this agent's sandboxes.
type SSHInfo struct {
	// User is the guest user that holds the authorized keys.
	User string `json:"user"`
	// JumpHost (ssh_jump_host) is the USER@HOST a CLI that reaches the agent
	// over TCP hops through; "" when none is configured.
	JumpHost string `json:"jump_host,omitempty"`
	// AuthorizedKeys are the SHA256 fingerprints of ssh_public_keys, the keys
	// the guest user accepts.
	AuthorizedKeys []string `json:"authorized_keys"`
}

// ProxmoxStatus says whether Proxmox answered.
type ProxmoxStatus struct {
	Reachable bool   `json:"reachable"`
	Version   string `json:"version,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Code is a machine-readable error code. Clients switch on it, never on text.
type Code string

// Error codes.
const (
	CodeBadRequest      Code = "bad_request"
	CodeInvalidField    Code = "invalid_field"
	CodeBodyTooLarge    Code = "body_too_large"
	CodeUnauthorized    Code = "unauthorized"
	CodeNotFound        Code = "not_found"
	CodeSandboxNotFound Code = "sandbox_not_found"
	CodeProfileNotFound Code = "profile_not_found"
	CodeConflict        Code = "conflict"
	CodeInvalidState    Code = "invalid_state"
	// CodeBusy: another operation on the object holds it (a Proxmox task is
	// running for it); the request did nothing and may be retried.
	CodeBusy             Code = "busy"
	CodeNotOwned         Code = "not_owned"
	CodeMethodNotAllowed Code = "method_not_allowed"
	CodeProxmox          Code = "proxmox_error"
	CodeUnavailable      Code = "unavailable"
	CodeInternal         Code = "internal"
)

// Error is the error body: {"error": {"code": …, "message": …}}.
type Error struct {
	Status  int    `json:"-"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Limit is set when a configured limit refused the request.
	Limit *Limit `json:"limit,omitempty"`
}

// Limit names the configuration key that refused a request, its value and
// what is in use now (both in the key's unit: seconds, bytes or a count).
type Limit struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
	Used  int64  `json:"used"`
}

// Limit codes: one per kind of limit, so that a client can tell them apart.
const (
	CodeTTLTooLong          Code = "ttl_exceeds_max_ttl"
	CodeSandboxLimit        Code = "sandbox_limit_reached"
	CodeProfileSandboxLimit Code = "profile_sandbox_limit_reached"
	CodeArtifactTooLarge    Code = "artifact_too_large"
	CodeArtifactQuota       Code = "artifact_quota_exceeded"
	CodeArtifactCount       Code = "artifact_count_limit_reached"
	CodeArtifactExists      Code = "artifact_exists"
	CodeRateLimited         Code = "rate_limited"
	CodeUploadTooSlow       Code = "upload_too_slow"
)

// LimitError is a refusal by the limit key (value, used now).
func LimitError(status int, code Code, key string, value, used int64, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...), Limit: &Limit{Key: key, Value: value, Used: used}}
}

// JobLogName is the artifact the guest runner uploads with the task's
// output; agentd masks the bundle's secret values in it before storing it.
const JobLogName = "agentlab-job.log"

func (e *Error) Error() string { return e.Message }

// ErrorBody wraps Error on the wire.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Errorf builds an *Error.
func Errorf(status int, code Code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError is a 400 naming the offending request field.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Status: 400, Code: CodeInvalidField, Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// Invalid turns a rejection from package validate into the 400 naming its
// field; any other error (nil included) is returned as it is.
func Invalid(err error) error {
	var ve *validate.Error
	if errors.As(err, &ve) {
		return &Error{Status: 400, Code: CodeInvalidField, Field: ve.Field, Message: ve.Error()}
	}
	return err
}

// IsCode reports whether err is an *Error with code c.
func IsCode(err error, c Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == c
}

// Workspace is a durable volume owned by a never-started holder VM.
type Workspace struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Team string `json:"team,omitempty"`
	Node string `json:"node,omitempty"` // the holder's node
	// Unavailable says why the workspace cannot be used now (its node is
	// offline); "" when it can.
	Unavailable     string    `json:"unavailable,omitempty"`
	State           string    `json:"state"` // CREATING, READY, DELETING
	Storage         string    `json:"storage"`
	SizeGB          int       `json:"size_gb"`
	HolderVMID      int       `json:"holder_vmid,omitempty"`
	Volume          string    `json:"volume,omitempty"` // read from Proxmox on show
	AttachedSandbox string    `json:"attached_sandbox,omitempty"`
	Session         string    `json:"session,omitempty"` // reserving session's name
	Error           string    `json:"error,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// WorkspaceList is the list response.
type WorkspaceList struct {
	Workspaces []Workspace `json:"workspaces"`
	Next       string      `json:"next,omitempty"`
}

// CreateWorkspaceRequest creates a workspace; Size is "80G" style (or SizeGB).
type CreateWorkspaceRequest struct {
	Name    string `json:"name"`
	Size    string `json:"size,omitempty"`
	SizeGB  int    `json:"size_gb,omitempty"`
	Storage string `json:"storage,omitempty"`
	// Node is the cluster node of the holder ("": the agent's own node).
	Node string `json:"node,omitempty"`
}

// MoveWorkspaceRequest migrates a detached workspace's holder (and its
// volume) to another node, optionally onto another storage there.
type MoveWorkspaceRequest struct {
	Node    string `json:"node"`
	Storage string `json:"storage,omitempty"`
}

// StorageList answers GET /v1/storages: the Proxmox storages a workspace
// volume may be created on (a workspace's, a fork's or a new session
// workspace's storage). Default is used when a request names none; it is
// also the first of Storages.
type StorageList struct {
	Default  string   `json:"default"`
	Storages []string `json:"storages"`
}

// ResizeWorkspaceRequest grows a workspace.
type ResizeWorkspaceRequest struct {
	Size   string `json:"size,omitempty"`
	SizeGB int    `json:"size_gb,omitempty"`
}

// AttachRequest attaches a workspace to a sandbox (name, VMID or id).
type AttachRequest struct {
	Sandbox string `json:"sandbox"`
}

// ForkRequest forks a workspace into a new one, optionally from a snapshot.
type ForkRequest struct {
	Name         string `json:"name"`
	FromSnapshot string `json:"from_snapshot,omitempty"`
	Storage      string `json:"storage,omitempty"`
}

// Snapshot is a workspace snapshot (a snapshot of its holder VM).
type Snapshot struct {
	Workspace   string    `json:"workspace"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// SnapshotList is the list response, oldest first.
type SnapshotList struct {
	Snapshots []Snapshot `json:"snapshots"`
}

// CreateSnapshotRequest names a new snapshot.
type CreateSnapshotRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

// Finding is one mismatch found by a workspace check.
type Finding struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// CheckResult reports every mismatch between a workspace row and Proxmox.
type CheckResult struct {
	Workspace Workspace `json:"workspace"`
	OK        bool      `json:"ok"`
	Findings  []Finding `json:"findings"`
}

// Session binds a name, a profile and a workspace to the current sandbox.
type Session struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Team        string    `json:"team,omitempty"`
	Profile     string    `json:"profile"`
	Workspace   string    `json:"workspace"`
	State       string    `json:"state"` // RUNNING, STOPPED, or the current sandbox's in-flight/failed state
	Sandbox     string    `json:"sandbox,omitempty"`
	SandboxVMID int       `json:"sandbox_vmid,omitempty"`
	IP          string    `json:"ip,omitempty"`
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// SessionList is the list response.
type SessionList struct {
	Sessions []Session `json:"sessions"`
	Next     string    `json:"next,omitempty"`
}

// CreateSessionRequest creates a session on an existing workspace (Workspace)
// or a new one (Workspace "new:NAME" with WorkspaceSize).
type CreateSessionRequest struct {
	Name             string `json:"name"`
	Profile          string `json:"profile"`
	Workspace        string `json:"workspace"`
	WorkspaceSize    string `json:"workspace_size,omitempty"`
	WorkspaceStorage string `json:"workspace_storage,omitempty"`
}

// ForkSessionRequest forks a session onto a fork of its workspace.
type ForkSessionRequest struct {
	Name          string `json:"name"`
	Profile       string `json:"profile,omitempty"`
	WorkspaceName string `json:"workspace_name,omitempty"`
	FromSnapshot  string `json:"from_snapshot,omitempty"`
}

// Workspace and session error codes.
const (
	CodeWorkspaceNotFound Code = "workspace_not_found"
	CodeSnapshotNotFound  Code = "snapshot_not_found"
	CodeSessionNotFound   Code = "session_not_found"
	CodeAttached          Code = "workspace_attached"
	CodeReserved          Code = "workspace_reserved"
	CodeUnsupported       Code = "unsupported_by_storage"
)

// LoopStatus reports one runtime loop.
type LoopStatus struct {
	Every      string     `json:"every"`
	Runs       int64      `json:"runs"`
	Errors     int64      `json:"errors"`
	LastRun    *time.Time `json:"last_run,omitempty"`
	DurationMS float64    `json:"last_duration_ms"`
	LastError  string     `json:"last_error,omitempty"`
}

// ReconcileAction is one change reconcile made (or, dry, would make).
type ReconcileAction struct {
	Sandbox string `json:"sandbox"`
	VMID    int    `json:"vmid"`
	Action  string `json:"action"` // destroyed, stopped, started, resized, lost, workspace_attached, workspace_detached, holder_missing
	Reason  string `json:"reason"`
	// Cores and MemoryMB are what a "resized" action read from Proxmox.
	Cores    int `json:"cores,omitempty"`
	MemoryMB int `json:"memory_mb,omitempty"`
}

// Orphan is a VM tagged by AgentLab that no live row accounts for.
type Orphan struct {
	VMID      int    `json:"vmid"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	Status    string `json:"status"`
	Kind      string `json:"kind"` // sandbox | workspace-holder
	SandboxID string `json:"sandbox_id,omitempty"`
	// Owner is "this-agent" when the VM's description names this
	// installation and an id this database issued for this VMID (only those
	// can ever be pruned), else "foreign": left alone whatever its tags say.
	Owner string `json:"owner"`
	// Prunable: prune --orphans --yes would destroy it (a sandbox VM of
	// ours, or the holder of a workspace whose create failed: no data).
	Prunable bool   `json:"prunable"`
	Note     string `json:"note"`
}

// Orphan owners.
const (
	OwnerThisAgent = "this-agent"
	OwnerForeign   = "foreign"
)

// ReconcileRequest asks for one reconcile cycle.
type ReconcileRequest struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// ReconcileReport is what a reconcile cycle found.
type ReconcileReport struct {
	DryRun   bool              `json:"dry_run"`
	VMs      int               `json:"vms"`
	Checked  int               `json:"checked"`
	Actions  []ReconcileAction `json:"actions"`
	Orphans  []Orphan          `json:"orphans"`
	Duration float64           `json:"duration_ms"`
}

// PruneRequest selects what prune removes.
type PruneRequest struct {
	// Orphans also destroys tagged VMs without a row, after re-checking that
	// each one's description names a sandbox of this agent that is gone.
	Orphans bool `json:"orphans,omitempty"`
	// DryRun lists what would be destroyed and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Node limits orphan pruning to one node.
	Node string `json:"node,omitempty"`
}

// GuestBootstrap is what GET /v1/bootstrap on the guest listener returns:
// everything a sandbox needs, once.
type GuestBootstrap struct {
	SandboxID     string            `json:"sandbox_id"`
	Name          string            `json:"name"`
	Env           map[string]string `json:"env,omitempty"`
	SSHKeys       []string          `json:"ssh_keys,omitempty"`
	Git           *GuestGit         `json:"git,omitempty"`
	Job           *GuestJob         `json:"job,omitempty"`
	ArtifactURL   string            `json:"artifact_url"`
	ReportURL     string            `json:"report_url"`
	ArtifactToken string            `json:"artifact_token"`
}

// GuestGit are git credentials for the guest.
type GuestGit struct {
	Username string `json:"username,omitempty"`
	Token    string `json:"token,omitempty"`
	Host     string `json:"host,omitempty"`
}

// GuestJob is the task a job sandbox runs.
type GuestJob struct {
	ID   string `json:"id"`
	Repo string `json:"repo,omitempty"`
	Ref  string `json:"ref,omitempty"`
	Task string `json:"task"`
}

// JobReport is what the guest runner reports when the task ends.
type JobReport struct {
	ExitCode int    `json:"exit_code"`
	Message  string `json:"message,omitempty"`
}

// RunJobRequest starts a job on a fresh sandbox.
type RunJobRequest struct {
	Profile   string `json:"profile"`
	Task      string `json:"task"`
	Repo      string `json:"repo,omitempty"`
	Ref       string `json:"ref,omitempty"`
	TTL       string `json:"ttl,omitempty"`
	Keepalive *bool  `json:"keepalive,omitempty"`
	Workspace string `json:"workspace,omitempty"`
}

// Job is a job as the API shows it.
type Job struct {
	ID        string    `json:"id"`
	Team      string    `json:"team,omitempty"`
	Sandbox   string    `json:"sandbox,omitempty"`
	SandboxID string    `json:"sandbox_id,omitempty"`
	Profile   string    `json:"profile"`
	Repo      string    `json:"repo,omitempty"`
	Ref       string    `json:"ref,omitempty"`
	Task      string    `json:"task"`
	Status    string    `json:"status"` // QUEUED, RUNNING, COMPLETED, FAILED, TIMEOUT
	ExitCode  *int      `json:"exit_code,omitempty"`
	Error     string    `json:"error,omitempty"`
	Keepalive bool      `json:"keepalive"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// JobList is the list response.
type JobList struct {
	Jobs []Job  `json:"jobs"`
	Next string `json:"next,omitempty"`
}

// Artifact is a file a guest uploaded.
type Artifact struct {
	ID        int64     `json:"id"`
	SandboxID string    `json:"sandbox_id"`
	JobID     string    `json:"job_id,omitempty"`
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
}

// ArtifactList is the list response.
type ArtifactList struct {
	Artifacts []Artifact `json:"artifacts"`
	Next      string     `json:"next,omitempty"`
}

// Job and artifact error codes.
const (
	CodeJobNotFound      Code = "job_not_found"
	CodeArtifactNotFound Code = "artifact_not_found"
	CodeForbidden        Code = "forbidden"
)

// ExecMaxStdin is the most stdin an exec can carry: PVE's limit on
// agent/exec's input-data.
const ExecMaxStdin = 64 << 10

// ExecRequest runs a program in a sandbox through the QEMU guest agent.
// Command is argv (no shell: wrap in ["sh","-c",…] for one); Stdin is the
// process's standard input (UTF-8 text, at most ExecMaxStdin bytes).
// TimeoutSeconds bounds the wait (default 60, at most 3600).
type ExecRequest struct {
	Command        []string `json:"command"`
	Stdin          string   `json:"stdin,omitempty"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty"`
}

// ExecResult is how the command ended. The guest agent hands the output over
// only once the process has exited, so it arrives whole, never streamed.
// TimedOut: the process was still running when the timeout ended; the guest
// agent cannot stop it, so it runs on in the guest as PID.
type ExecResult struct {
	PID             int     `json:"pid"`
	Exited          bool    `json:"exited"`
	ExitCode        *int    `json:"exit_code,omitempty"`
	Signal          *int    `json:"signal,omitempty"`
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	StdoutTruncated bool    `json:"stdout_truncated,omitempty"`
	StderrTruncated bool    `json:"stderr_truncated,omitempty"`
	TimedOut        bool    `json:"timed_out,omitempty"`
	DurationMS      float64 `json:"duration_ms"`
}

// Guest access error codes.
const (
	// CodeExecFailed: the guest could not start the program (not found, not
	// executable); nothing ran.
	CodeExecFailed Code = "exec_failed"
	// CodeGuestAgent: the sandbox's QEMU guest agent is not configured or
	// does not answer.
	CodeGuestAgent Code = "guest_agent_unavailable"
)

// SandboxSnapshot is a Proxmox snapshot of a sandbox's VM.
type SandboxSnapshot struct {
	Sandbox     string `json:"sandbox"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// WithMemory: the snapshot holds the RAM too (PVE's vmstate); a restore
	// resumes the VM where it was instead of leaving it stopped.
	WithMemory bool      `json:"with_memory"`
	Parent     string    `json:"parent,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// SandboxSnapshotList is the list response, oldest first.
type SandboxSnapshotList struct {
	Snapshots []SandboxSnapshot `json:"snapshots"`
}

// CreateSandboxSnapshotRequest names a new sandbox snapshot; WithMemory also
// saves the RAM of a running sandbox.
type CreateSandboxSnapshotRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	WithMemory  bool   `json:"with_memory,omitempty"`
}

// RevertRequest rolls a sandbox back to its "clean" snapshot. DeleteNewer
// deletes the snapshots taken after it first where the storage (ZFS) rolls
// back only to the most recent one; without it such a revert is refused.
type RevertRequest struct {
	DeleteNewer bool `json:"delete_newer,omitempty"`
}

// ResizeRequest changes a sandbox's resources; zero leaves one as it is.
// The root disk only grows (Proxmox cannot shrink a disk).
type ResizeRequest struct {
	Cores    int `json:"cores,omitempty"`
	MemoryMB int `json:"memory_mb,omitempty"`
	DiskGB   int `json:"disk_gb,omitempty"`
}

// ResizeResult is the VM's configuration read back after a resize. Pending
// names the changes a running VM takes only at its next start (cores always,
// memory without memory hotplug); the disk grows at once.
type ResizeResult struct {
	Sandbox  Sandbox  `json:"sandbox"`
	Cores    int      `json:"cores"`
	MemoryMB int      `json:"memory_mb"`
	DiskGB   int      `json:"disk_gb"`
	Pending  []string `json:"pending"`
}

// ExposeRequest publishes a guest TCP port on the host's uplink address.
// HostPort 0 picks a free one of expose_port_range; Sources default to
// expose_default_sources; 0.0.0.0/0 needs Public. TTL ("90m"; "" none).
type ExposeRequest struct {
	Port     int      `json:"port"`
	HostPort int      `json:"host_port,omitempty"`
	Sources  []string `json:"sources,omitempty"`
	TTL      string   `json:"ttl,omitempty"`
	Public   bool     `json:"public,omitempty"`
}

// ExposedPort is a published guest port.
type ExposedPort struct {
	SandboxID   string     `json:"sandbox_id"`
	Sandbox     string     `json:"sandbox"`
	Port        int        `json:"port"`
	HostAddress string     `json:"host_address,omitempty"`
	HostPort    int        `json:"host_port"`
	SandboxAddr string     `json:"sandbox_address"`
	Sources     []string   `json:"sources"`
	Public      bool       `json:"public"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// ExposedPortList is the ports listing.
type ExposedPortList struct {
	Ports []ExposedPort `json:"ports"`
}

// CodePortNotExposed: the sandbox has no exposed port of that number.
const CodePortNotExposed Code = "port_not_exposed"

// HostKey is a sandbox's pinned SSH host key (GET /v1/sandboxes/{id}/hostkey):
// read from the guest's /etc/ssh/ssh_host_ed25519_key.pub through the QEMU
// guest agent on first use, then kept. Verified: the running guest's key was
// read again just now and matches (false when the guest could not be asked,
// e.g. the sandbox is stopped: the answer is then the stored key alone).
type HostKey struct {
	Sandbox     string    `json:"sandbox"`
	SandboxID   string    `json:"sandbox_id"`
	Key         string    `json:"key"`
	Fingerprint string    `json:"fingerprint"`
	PinnedAt    time.Time `json:"pinned_at"`
	Verified    bool      `json:"verified"`
}

// Host key error codes.
const (
	// CodeHostKeyUnavailable: the guest has no readable ed25519 host key
	// (and none was pinned before), so nothing can be pinned.
	CodeHostKeyUnavailable Code = "host_key_unavailable"
	// CodeHostKeyChanged: the guest now reports another host key than the
	// pinned one. agentd refuses it; only a new sandbox gets a new pin.
	CodeHostKeyChanged Code = "host_key_changed"
)

// SecretsBundle describes a secrets bundle by its names only: the API never
// returns a secret value (nor an SSH public key: names are enough to manage
// them, and the bundle is the place they live).
type SecretsBundle struct {
	Name    string      `json:"name"`
	Env     []string    `json:"env"`      // variable names, sorted
	SSHKeys []string    `json:"ssh_keys"` // key names, sorted
	Git     *SecretsGit `json:"git,omitempty"`
	// Format is "age" (agentd writes it) or "sops" (read-only here: edit
	// the file with sops).
	Format   string `json:"format"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// SecretsGit says whom the git credentials are for, and whether a token is set.
type SecretsGit struct {
	Username string `json:"username,omitempty"`
	Host     string `json:"host,omitempty"`
	TokenSet bool   `json:"token_set"`
}

// SecretsBundleList is GET /v1/secrets.
type SecretsBundleList struct {
	Bundles []SecretsBundle `json:"bundles"`
}

// SetSecretEnvRequest is PUT /v1/secrets/{bundle}/env/{name}.
type SetSecretEnvRequest struct {
	Value string `json:"value"`
}

// AddSSHKeyRequest is PUT /v1/secrets/{bundle}/ssh-keys/{name}.
type AddSSHKeyRequest struct {
	PublicKey string `json:"public_key"`
}

// SetGitRequest is PUT /v1/secrets/{bundle}/git.
type SetGitRequest struct {
	Username string `json:"username"`
	Host     string `json:"host,omitempty"` // default github.com
	Token    string `json:"token"`
}

// SecretValueMax bounds one secret value (as the CLI's reader does).
const SecretValueMax = 1 << 20

// Error codes of the secrets endpoints.
const (
	CodeSecretNotFound Code = "secret_not_found"
	CodeNoSecretsKey   Code = "no_secrets_key"
	// CodeSecretsUnreadable: the bundle's file exists but does not open with
	// the agent's key (wrong recipient, tampered, not a bundle).
	CodeSecretsUnreadable Code = "secrets_unreadable"
	// CodeSecretsReadOnly: a sops bundle; change it with sops.
	CodeSecretsReadOnly Code = "secrets_read_only"
)

// MaxPoolSize bounds a pool's max: every member is a running VM.
const MaxPoolSize = 100

// Pool is one profile's warm pool as the API reports it.
type Pool struct {
	Profile  string `json:"profile"`
	MinReady int    `json:"min_ready"`
	Max      int    `json:"max"`
	// Source says where min_ready and max come from: "profile" (the
	// profile's pool key) or "override" (PUT /v1/pools/{profile}, kept in the
	// state database until cleared).
	Source string `json:"source"`
	// Ready members are POOLED: a create of the profile claims one.
	Ready int `json:"ready"`
	// Building members are still being cloned or booted.
	Building int `json:"building"`
	// Claimed counts creates this pool has served since it was defined.
	Claimed int64 `json:"claimed"`
	// ProfileHash is the profile version members are built from; members of
	// another version are replaced.
	ProfileHash string `json:"profile_hash"`
	// LastError is the last failure of the pool loop for this profile.
	LastError string `json:"last_error,omitempty"`
}

// PoolList is the pools response: every profile, pooled or not.
type PoolList struct {
	Pools []Pool `json:"pools"`
}

// SetPoolRequest overrides a profile's pool at runtime. Clear drops the
// override (the profile's own pool key applies again); otherwise both
// numbers are required.
type SetPoolRequest struct {
	MinReady *int `json:"min_ready,omitempty"`
	Max      *int `json:"max,omitempty"`
	Clear    bool `json:"clear,omitempty"`
}

// ValidatePool checks a pool size pair; field prefixes the keys named in
// the error ("pool." for a profile, "" for the API).
func ValidatePool(field string, minReady, max int) *Error {
	switch {
	case minReady < 0:
		return FieldError(field+"min_ready", "must be 0 or more, got %d", minReady)
	case max < 0 || max > MaxPoolSize:
		return FieldError(field+"max", "must be between 0 and %d, got %d", MaxPoolSize, max)
	case minReady > max:
		return FieldError(field+"min_ready", "%d is more than max %d: raise max or lower min_ready", minReady, max)
	}
	return nil
}

// Node is one cluster node as agentd places sandboxes on it: capacity from
// Proxmox, what is committed there (configured memory and cores of the VMs
// that run or are being made, agentd's and others'), and its state.
type Node struct {
	Name           string `json:"name"`
	Online         bool   `json:"online"`
	Drained        bool   `json:"drained"`
	MemoryMB       int64  `json:"memory_mb"`
	CommittedMB    int64  `json:"committed_mb"`
	FreeMB         int64  `json:"free_mb"`
	CPUs           int    `json:"cpus"`
	CommittedCores int    `json:"committed_cores"`
	Sandboxes      int    `json:"sandboxes"`
	InFlight       int    `json:"in_flight"`
	// Agent is the node agent's last report (nil: none yet).
	Agent *NodeAgent `json:"agent,omitempty"`
}

// NodeList is the list response.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// CodeNodeNotFound: the node is not one agentd uses.
const CodeNodeNotFound Code = "node_not_found"

// Headers of a guest request a node agent relays: the guest's source
// address and its own bearer token (Authorization carries the node agent's).
const (
	GuestAddrHeader = "Agentlab-Guest-Addr"
	GuestAuthHeader = "Agentlab-Guest-Authorization"
)

// NodeDuties is what a node's agent (`agentd node run`) applies on its node:
// the nftables ruleset of the agent bridge with the bindings and exposed
// ports of the sandboxes there, and how often to come back.
type NodeDuties struct {
	Node      string `json:"node"`
	Ruleset   string `json:"ruleset"`
	Bindings  int    `json:"bindings"`
	Exposed   int    `json:"exposed"`
	IntervalS int    `json:"interval_seconds"`
	// GuestListen is where the node agent serves the guest relay: the
	// agent bridge's host address and guest port, as on agentd's node.
	GuestListen string `json:"guest_listen"`
}

// NodeReport is what a node agent reports: its SSH flows (addresses of the
// agent subnet with an established connection to port 22) for idle stop,
// and how its last apply went.
type NodeReport struct {
	Version  string   `json:"version"`
	SSHFlows []string `json:"ssh_flows"`
	// SSHUnknown: the node's conntrack could not be read; its sandboxes'
	// activity is unknown (idle stop leaves them alone).
	SSHUnknown bool   `json:"ssh_unknown,omitempty"`
	Bindings   int    `json:"bindings"`
	Exposed    int    `json:"exposed"`
	Error      string `json:"error,omitempty"`
}

// NodeAgent is a node agent's last report as the controller saw it.
type NodeAgent struct {
	LastReport *time.Time `json:"last_report,omitempty"`
	Fresh      bool       `json:"fresh"`
	Version    string     `json:"version,omitempty"`
	Bindings   int        `json:"bindings"`
	Exposed    int        `json:"exposed"`
	Error      string     `json:"error,omitempty"`
}
