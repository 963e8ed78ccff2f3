package provider

import (
	"context"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// NewNodesDataSource is the agentlab_nodes factory.
func NewNodesDataSource() datasource.DataSource { return &nodesDS{} }

type nodesDS struct{ baseDS }

type nodesModel struct {
	Names types.List `tfsdk:"names"`
	Nodes types.List `tfsdk:"nodes"`
}

// nodeModel is one node, with the API's field names.
type nodeModel struct {
	Name           types.String `tfsdk:"name"`
	Online         types.Bool   `tfsdk:"online"`
	Drained        types.Bool   `tfsdk:"drained"`
	MemoryMB       types.Int64  `tfsdk:"memory_mb"`
	CommittedMB    types.Int64  `tfsdk:"committed_mb"`
	FreeMB         types.Int64  `tfsdk:"free_mb"`
	CPUs           types.Int64  `tfsdk:"cpus"`
	CommittedCores types.Int64  `tfsdk:"committed_cores"`
	Sandboxes      types.Int64  `tfsdk:"sandboxes"`
	InFlight       types.Int64  `tfsdk:"in_flight"`
}

var nodeTypes = map[string]attr.Type{"name": types.StringType, "online": types.BoolType, "drained": types.BoolType,
	"memory_mb": types.Int64Type, "committed_mb": types.Int64Type, "free_mb": types.Int64Type, "cpus": types.Int64Type,
	"committed_cores": types.Int64Type, "sandboxes": types.Int64Type, "in_flight": types.Int64Type}

func (d *nodesDS) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_nodes"
}

func (d *nodesDS) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.Attribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	boolean := func(desc string) schema.Attribute {
		return schema.BoolAttribute{Computed: true, MarkdownDescription: desc}
	}
	num := func(desc string) schema.Attribute {
		return schema.Int64Attribute{Computed: true, MarkdownDescription: desc}
	}
	node := map[string]schema.Attribute{
		"name":            str("Node name, the value of an `agentlab_sandbox`'s `node`."),
		"online":          boolean("Whether Proxmox reports the node online."),
		"drained":         boolean("Whether the node is drained (`agentd node drain`): agentd places no new sandbox there; those there keep running."),
		"memory_mb":       num("Memory of the node in MiB."),
		"committed_mb":    num("Memory in MiB configured for the VMs that run or are being made there (agentd's and others')."),
		"free_mb":         num("`memory_mb` minus `committed_mb`: what placement counts as free."),
		"cpus":            num("CPUs of the node."),
		"committed_cores": num("vCPUs configured for the VMs that run or are being made there."),
		"sandboxes":       num("agentd's sandboxes on the node."),
		"in_flight":       num("Sandboxes being created there now."),
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The cluster nodes agentd places sandboxes on, as its last inventory saw them: capacity, what is committed, " +
			"and whether each is online or drained. A standalone agent has one node.",
		Attributes: map[string]schema.Attribute{
			"names": schema.ListAttribute{Computed: true, ElementType: types.StringType, MarkdownDescription: "Node names, sorted."},
			"nodes": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "The nodes, sorted by name.", NestedObject: schema.NestedAttributeObject{Attributes: node}},
		},
	}
}

func (d *nodesDS) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	ns, err := d.c.Nodes(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Unable to Read Nodes", err.Error())
		return
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i].Name < ns[j].Name })
	names := []string{}
	items := []nodeModel{}
	for _, n := range ns {
		names = append(names, n.Name)
		items = append(items, nodeFromAPI(n))
	}
	var m nodesModel
	var d1, d2 diag.Diagnostics
	m.Names, d1 = types.ListValueFrom(ctx, types.StringType, names)
	m.Nodes, d2 = types.ListValueFrom(ctx, types.ObjectType{AttrTypes: nodeTypes}, items)
	resp.Diagnostics.Append(d1...)
	resp.Diagnostics.Append(d2...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func nodeFromAPI(n api.Node) nodeModel {
	return nodeModel{Name: types.StringValue(n.Name), Online: types.BoolValue(n.Online), Drained: types.BoolValue(n.Drained),
		MemoryMB: types.Int64Value(n.MemoryMB), CommittedMB: types.Int64Value(n.CommittedMB), FreeMB: types.Int64Value(n.FreeMB),
		CPUs: types.Int64Value(int64(n.CPUs)), CommittedCores: types.Int64Value(int64(n.CommittedCores)),
		Sandboxes: types.Int64Value(int64(n.Sandboxes)), InFlight: types.Int64Value(int64(n.InFlight))}
}
