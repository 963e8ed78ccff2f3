package provider

import (
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
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
	"vmid":             {kind: kindInt64, desc: "Proxmox VMID."},
	"node":             {desc: "Proxmox node."},
	"state":            {desc: "Lifecycle state (`RUNNING`, `STOPPED`, …)."},
	"ip":               {desc: "IPv4 address reported by the guest agent while running."},
	"lease_expires_at": {desc: "When the lease ends (RFC 3339); null when the sandbox has none."},
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
	VMID           types.Int64  `tfsdk:"vmid"`
	Node           types.String `tfsdk:"node"`
	State          types.String `tfsdk:"state"`
	IP             types.String `tfsdk:"ip"`
	LeaseExpiresAt types.String `tfsdk:"lease_expires_at"`
}

// fromAPI fills the shared attributes from agentd's view.
func (m *sandboxObject) fromAPI(sb *api.Sandbox) {
	m.ID, m.Name, m.Profile = types.StringValue(sb.ID), types.StringValue(sb.Name), types.StringValue(sb.Profile)
	m.Workspace = optString(sb.Workspace)
	m.VMID, m.Node, m.State = types.Int64Value(int64(sb.VMID)), types.StringValue(sb.Node), types.StringValue(string(sb.State))
	m.IP = types.StringValue(sb.IP)
	m.LeaseExpiresAt = timeString(sb.LeaseExpiresAt)
}
