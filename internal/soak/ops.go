package soak

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// exec runs one operation and classifies its answer. Operations that copy or
// replace workspace content hold the model's locks of the workspaces
// involved, so the I4 model knows the order of writes and snapshots.
func (r *runner) exec(ctx context.Context, op Op) Record {
	rec := Record{Op: op, Start: time.Now()}
	gen0 := r.gen.Load()
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	c := r.env.Client
	skip := func(why string) Record {
		rec.Class, rec.Message, rec.End = ClassSkipped, why, time.Now()
		return rec
	}
	var err error
	switch op.Kind {
	case OpSandboxCreate:
		_, err = c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: op.Sandbox, Profile: op.Profile, Workspace: op.Workspace, Node: op.Node})
	case OpSandboxStop:
		_, err = c.Stop(ctx, op.Sandbox)
	case OpSandboxStart:
		_, err = c.Start(ctx, op.Sandbox)
	case OpSandboxDestroy:
		_, err = c.Destroy(ctx, op.Sandbox, false)
	case OpSandboxForce:
		_, err = c.Destroy(ctx, op.Sandbox, true)
	case OpSandboxRenew:
		_, err = c.Renew(ctx, op.Sandbox, "2h")
	case OpWsAttach:
		_, err = c.AttachWorkspace(ctx, op.Workspace, op.Sandbox)
	case OpWsDetach:
		_, err = c.DetachWorkspace(ctx, op.Workspace)
	case OpSesResume:
		_, err = c.ResumeSession(ctx, op.Target)
	case OpSesStop:
		_, err = c.StopSession(ctx, op.Target)
	case OpSesDelete:
		_, err = c.DeleteSession(ctx, op.Target)
	case OpPoolSet:
		var minReady, max int
		if _, serr := fmt.Sscanf(op.Target, "%d:%d", &minReady, &max); serr != nil {
			return skip("pool size " + op.Target + ": " + serr.Error())
		}
		_, err = c.SetPool(ctx, op.Profile, api.SetPoolRequest{MinReady: &minReady, Max: &max})

	case OpWsWrite:
		defer r.model.Lock(op.Workspace)()
		ws, found, why := r.lookup(ctx, op.Workspace)
		if !found || ws.State != "READY" {
			return skip(why)
		}
		// On the holder's node: PVE reads a VM's config only there.
		cfg, err := r.env.PVE.On(cmp.Or(ws.Node, r.env.Nodes[0])).Config(ctx, ws.HolderVMID)
		if err != nil {
			return skip("holder config: " + err.Error())
		}
		// A guest writes through a sandbox, and agentd attaches no holder a
		// task still holds (a restore of a killed agentd may still run).
		if lock, _ := cfg["lock"].(string); lock != "" {
			return skip("holder locked (" + lock + ")")
		}
		vol := pve.DiskVolume(cfg, "scsi0")
		data := fmt.Sprintf("seed%d-op%d", r.plan.Seed, op.Seq)
		if err := r.env.Sim.Do(ctx, "write-file", Hook{Volid: vol, File: op.File, Data: data}, nil); err != nil {
			return skip("write: " + err.Error())
		}
		r.model.Wrote(ws.ID, ws.Name, op.File, data)
		rec.Class, rec.End = ClassOK, time.Now()
		return rec

	case OpWsCreate:
		defer r.model.Lock(op.Workspace)()
		_, existed, why := r.lookup(ctx, op.Workspace)
		if why != "" && why != "absent" {
			return skip(why)
		}
		var ws *api.Workspace
		ws, err = c.CreateWorkspace(ctx, api.CreateWorkspaceRequest{Name: op.Workspace, Size: "1G", Node: op.Node})
		r.classify(&rec, err, gen0)
		if err == nil && !existed {
			r.model.Created(ws.ID, ws.Name)
		}
		return rec

	case OpWsMove:
		// Under the model's lock: a move copies the volume, and the writes
		// it must carry over are the ones ordered before it.
		defer r.model.Lock(op.Workspace)()
		_, err = c.MoveWorkspace(ctx, op.Workspace, api.MoveWorkspaceRequest{Node: op.Node})

	case OpWsDelete:
		defer r.model.Lock(op.Workspace)()
		ws, found, why := r.lookup(ctx, op.Workspace)
		if !found && why != "absent" {
			return skip(why)
		}
		_, err = c.DeleteWorkspace(ctx, op.Workspace)
		r.classify(&rec, err, gen0)
		if found {
			r.model.Deleted(ws.ID, ws.Name, rec.result())
		}
		return rec

	case OpWsFork:
		defer r.model.Lock(op.Workspace, op.Target)()
		src, found, why := r.lookup(ctx, op.Workspace)
		if !found && why != "absent" {
			return skip(why)
		}
		_, existed, why := r.lookup(ctx, op.Target)
		if why != "" && why != "absent" {
			return skip(why)
		}
		var nw *api.Workspace
		nw, err = c.ForkWorkspace(ctx, op.Workspace, api.ForkRequest{Name: op.Target, FromSnapshot: op.Snapshot})
		r.classify(&rec, err, gen0)
		if err == nil && !existed && found {
			r.model.Forked(src.ID, src.Name, op.Snapshot, nw.ID, nw.Name)
		}
		return rec

	case OpSnapCreate, OpSnapRestore:
		defer r.model.Lock(op.Workspace)()
		ws, found, why := r.lookup(ctx, op.Workspace)
		if !found && why != "absent" {
			return skip(why)
		}
		if op.Kind == OpSnapCreate {
			_, err = c.CreateSnapshot(ctx, op.Workspace, api.CreateSnapshotRequest{Name: op.Snapshot})
		} else {
			_, err = c.RestoreSnapshot(ctx, op.Workspace, op.Snapshot)
		}
		r.classify(&rec, err, gen0)
		switch {
		case !found:
		case op.Kind == OpSnapCreate:
			res := rec.result()
			if rec.Class == Class4xx || api.IsCode(err, api.CodeConflict) {
				res = Refused
			}
			r.model.Snapshotted(ws.ID, ws.Name, op.Snapshot, res)
		default:
			r.model.Restored(ws.ID, ws.Name, op.Snapshot, rec.result())
		}
		return rec

	case OpSnapDelete:
		defer r.model.Lock(op.Workspace)()
		err = c.DeleteSnapshot(ctx, op.Workspace, op.Snapshot)

	case OpSesCreate:
		name, isNew := strings.CutPrefix(op.Workspace, "new:")
		defer r.model.Lock(name)()
		_, existed, why := r.lookup(ctx, name)
		if why != "" && why != "absent" {
			return skip(why)
		}
		_, err = c.CreateSession(ctx, api.CreateSessionRequest{Name: op.Target, Profile: op.Profile, Workspace: op.Workspace, WorkspaceSize: "1G"})
		r.classify(&rec, err, gen0)
		if err == nil && isNew && !existed {
			if ws, found, _ := r.lookup(ctx, name); found {
				r.model.Created(ws.ID, ws.Name)
			}
		}
		return rec

	case OpSesFork:
		srcWs := ""
		if x, err := c.Session(ctx, op.Source); err == nil {
			srcWs = x.Workspace
		}
		defer r.model.Lock(srcWs, op.Workspace)()
		src, srcFound, _ := r.lookup(ctx, srcWs)
		_, existed, why := r.lookup(ctx, op.Workspace)
		if why != "" && why != "absent" {
			return skip(why)
		}
		_, err = c.ForkSession(ctx, op.Source, api.ForkSessionRequest{Name: op.Target, WorkspaceName: op.Workspace})
		r.classify(&rec, err, gen0)
		if err == nil && !existed && srcFound {
			if nw, found, _ := r.lookup(ctx, op.Workspace); found {
				r.model.Forked(src.ID, src.Name, "", nw.ID, nw.Name)
			}
		}
		return rec

	default:
		return skip("unknown operation " + op.Kind)
	}
	r.classify(&rec, err, gen0)
	return rec
}

// lookup reads a workspace by name. why is "absent" for a 404 and names the
// problem when agentd could not be asked (the caller then skips: without the
// workspace's id the model cannot follow the operation).
func (r *runner) lookup(ctx context.Context, name string) (ws *api.Workspace, found bool, why string) {
	if name == "" {
		return nil, false, "absent"
	}
	ws, err := r.env.Client.Workspace(ctx, name)
	switch {
	case err == nil:
		return ws, true, ""
	case client.IsNotFound(err):
		return nil, false, "absent"
	}
	return nil, false, "look up workspace " + name + ": " + err.Error()
}
