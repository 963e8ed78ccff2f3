package provider

import (
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// sandboxAttrs are the attributes of a sandbox that the agentlab_sandbox
// resource and data source share.
var sandboxAttrs = objectAttrs{
	"id": {desc: "Sandbox id assigned by agentd (`sbx-…`)."},
	"name": {desc: "Sandbox name, also the VM's host name: 1-63 lowercase letters, digits or dashes, not all digits and not starting with an id prefix (`sbx-`, `ws-`, `ses-`, `job-`).",
		set: "Changing it replaces the sandbox."},
	"profile": {desc: "Profile the sandbox is built from (see the `agentlab_profiles` data source).", set: "Changing it replaces the sandbox."},
	"workspace": {desc: "Name of the `agentlab_workspace` attached as the sandbox's second disk; null when none.",
		set: "Changed in place (detach, attach)."},
	"team": {desc: "Team that owns the sandbox: a team token's team, or the provider's `team` (`default` without one) for a global token. Fixed at create."},
	"vmid": {kind: kindInt64, desc: "Proxmox VMID."},
	"node": {desc: "Proxmox node the sandbox runs on (see the `agentlab_nodes` data source).",
		set: "Set it to pin the sandbox to that node (checked against agentd's nodes at plan time); unset, agentd places it and the attribute reads where it went. " +
			"Changing it replaces the sandbox; removing it from the configuration keeps the sandbox where it is."},
	"state":            {desc: "Lifecycle state (`RUNNING`, `STOPPED`, …)."},
	"ip":               {desc: "IPv4 address reported by the guest agent while running."},
	"lease_expires_at": {desc: "When the lease ends (RFC 3339); null when the sandbox has none."},
	"cores": {kind: kindInt64, desc: "vCPUs as Proxmox has the VM configured (a change pending until the next start included), read back at create, resize and by agentd's reconcile.",
		set: fmt.Sprintf("1-%d; defaults to the profile's, and a new sandbox's VM is configured with it before its first boot. "+
			"Changed in place; a running sandbox takes new cores only at its next start (Proxmox changes them only then), which the apply reports in a warning. "+
			"Removing it from the configuration keeps the current value; a change made outside Terraform shows as drift once agentd's reconcile has read it.", validate.MaxCores)},
	"memory_mb": {kind: kindInt64, desc: "Memory in MiB as Proxmox has the VM configured (a change pending until the next start included).",
		set: fmt.Sprintf("%d-%d; defaults to the profile's. Changed in place; a running sandbox takes it at its next start unless its VM has memory hotplug, "+
			"and the apply says so in a warning. Removing it from the configuration keeps the current value.", validate.MinMemoryMB, validate.MaxMemoryMB)},
}

// sandboxLookup is what else the data source's name may be.
const sandboxLookup = "The data source also finds a sandbox by its VMID or id."

// sandboxObject holds sandboxAttrs; the resource's and the data source's
// models embed it.
type sandboxObject struct {
	ID             types.String `tfsdk:"id"`
	Name           types.String `tfsdk:"name"`
	Profile        types.String `tfsdk:"profile"`
	Workspace      types.String `tfsdk:"workspace"`
	Team           types.String `tfsdk:"team"`
	VMID           types.Int64  `tfsdk:"vmid"`
	Node           types.String `tfsdk:"node"`
	State          types.String `tfsdk:"state"`
	IP             types.String `tfsdk:"ip"`
	LeaseExpiresAt types.String `tfsdk:"lease_expires_at"`
	Cores          types.Int64  `tfsdk:"cores"`
	MemoryMB       types.Int64  `tfsdk:"memory_mb"`
}

// fromAPI fills the shared attributes from agentd's view.
func (m *sandboxObject) fromAPI(sb *api.Sandbox) {
	m.ID, m.Name, m.Profile = types.StringValue(sb.ID), types.StringValue(sb.Name), types.StringValue(sb.Profile)
	m.Workspace, m.Team = optString(sb.Workspace), optString(sb.Team)
	m.VMID, m.Node, m.State = types.Int64Value(int64(sb.VMID)), types.StringValue(sb.Node), types.StringValue(string(sb.State))
	m.IP = types.StringValue(sb.IP)
	m.LeaseExpiresAt = timeString(sb.LeaseExpiresAt)
	// 0 until the VM was configured: the resource keeps what it has (its
	// plan or the profile's), the data source shows null.
	if sb.Cores != 0 {
		m.Cores = types.Int64Value(int64(sb.Cores))
	}
	if sb.MemoryMB != 0 {
		m.MemoryMB = types.Int64Value(int64(sb.MemoryMB))
	}
}
