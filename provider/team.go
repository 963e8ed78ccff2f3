package provider

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timetypes/timetypes"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/auth"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// teamAttrs are the attributes of a team that the agentlab_team resource
// and data source share; max_ttl is a GoDuration in the resource, a plain
// string in the data source.
var teamAttrs = objectAttrs{
	"name":        {desc: "Team name: 1-32 lowercase letters, digits and inner hyphens.", set: "Changing it replaces the team."},
	"description": {desc: "What the team is for; null when none.", set: "Changed in place."},
	"max_ttl":     {desc: "Longest lease a sandbox of the team may ask for, as a Go duration (`8h`, `30m`); `0s` for no limit.", set: quotaSet},
	"max_sandboxes": {kind: kindInt64, desc: "Live sandboxes the team may hold; 0 for no limit.",
		set: quotaSet},
	"max_cores":        {kind: kindInt64, desc: "vCPUs of the team's live sandboxes, summed; 0 for no limit.", set: quotaSet},
	"max_memory_mb":    {kind: kindInt64, desc: "Memory of the team's live sandboxes in MiB, summed; 0 for no limit.", set: quotaSet},
	"max_workspace_gb": {kind: kindInt64, desc: "Sizes of the team's workspaces in GiB, summed; 0 for no limit.", set: quotaSet},
	"max_artifact_bytes": {kind: kindInt64, desc: "Bytes of stored artifacts of the team's sandboxes; 0 for no limit.",
		set: quotaSet},
}

// quotaSet is how the resource sets a quota key.
const quotaSet = "Defaults to 0; changed in place. agentd refuses what would exceed a limit (429 `team_quota_exceeded`); " +
	"lowering a limit below what is in use stops only new objects."

// teamObject holds teamAttrs; the resource's and the data source's models
// embed it.
type teamObject struct {
	Name             types.String `tfsdk:"name"`
	Description      types.String `tfsdk:"description"`
	MaxSandboxes     types.Int64  `tfsdk:"max_sandboxes"`
	MaxCores         types.Int64  `tfsdk:"max_cores"`
	MaxMemoryMB      types.Int64  `tfsdk:"max_memory_mb"`
	MaxWorkspaceGB   types.Int64  `tfsdk:"max_workspace_gb"`
	MaxArtifactBytes types.Int64  `tfsdk:"max_artifact_bytes"`
}

// fromAPI fills the shared attributes; maxTTL is the quota's lease limit in
// its duration spelling.
func (m *teamObject) fromAPI(t *api.Team) (maxTTL string) {
	m.Name, m.Description = types.StringValue(t.Name), optString(t.Description)
	q := t.Quota
	m.MaxSandboxes, m.MaxCores, m.MaxMemoryMB = types.Int64Value(q.Sandboxes), types.Int64Value(q.Cores), types.Int64Value(q.MemoryMB)
	m.MaxWorkspaceGB, m.MaxArtifactBytes = types.Int64Value(q.WorkspaceGB), types.Int64Value(q.ArtifactBytes)
	return shortDuration(time.Duration(q.TTLSeconds) * time.Second)
}

// shortDuration spells a duration as a person would (8h, 1h30m, 0s), so
// that an import reads back what the configuration most likely says.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// quota is the whole quota the model asks for (PUT replaces all of it).
func (m *teamObject) quota(maxTTL timetypes.GoDuration) api.TeamQuota {
	d, _ := maxTTL.ValueGoDuration() // validated at plan time
	return api.TeamQuota{Sandboxes: m.MaxSandboxes.ValueInt64(), Cores: m.MaxCores.ValueInt64(), MemoryMB: m.MaxMemoryMB.ValueInt64(),
		WorkspaceGB: m.MaxWorkspaceGB.ValueInt64(), TTLSeconds: int64(d / time.Second), ArtifactBytes: m.MaxArtifactBytes.ValueInt64()}
}

func teamNameRule() validator.String {
	return stringRule{summary: "Invalid Team Name", desc: "1-32 lowercase letters, digits and inner hyphens",
		check: func(_, v string) error { return auth.ValidTeam(v) }}
}

func maxTTLRule() validator.String {
	return stringRule{summary: "Invalid Quota TTL", desc: "a duration of at least 1m in whole seconds (30m, 8h), or 0 for no limit",
		check: func(f, v string) error {
			_, err := validate.TTL(f, v)
			return err
		}}
}

// tokenTTLRule: what agentd accepts for a token's lifetime.
func tokenTTLRule() validator.String {
	return stringRule{summary: "Invalid Token TTL", desc: "a positive Go duration (720h, 90m)",
		check: func(f, v string) error {
			if d, err := time.ParseDuration(v); err != nil || d <= 0 {
				return fmt.Errorf("%s: want a positive Go duration such as 720h, got %q", f, v)
			}
			return nil
		}}
}
