package server

import (
	"context"
	"net/http"
	"net/url"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
	"github.com/agentlab/terraform-provider-agentlab/internal/workspace"
)

func (s *Server) workspaceRoutes(add func(method, path string, p perm, h handler)) {
	add("GET", "/v1/storages", teamRead, s.listStorages)
	add("GET", "/v1/workspaces", teamRead, s.listWorkspaces)
	add("POST", "/v1/workspaces", teamWrite, s.createWorkspace)
	add("GET", "/v1/workspaces/{ws}", teamRead, s.getWorkspace)
	add("DELETE", "/v1/workspaces/{ws}", teamWrite, s.deleteWorkspace)
	add("POST", "/v1/workspaces/{ws}/attach", teamWrite, s.attachWorkspace)
	add("POST", "/v1/workspaces/{ws}/detach", teamWrite, s.detachWorkspace)
	add("POST", "/v1/workspaces/{ws}/resize", teamWrite, s.resizeWorkspace)
	add("POST", "/v1/workspaces/{ws}/fork", teamWrite, s.forkWorkspace)
	add("POST", "/v1/workspaces/{ws}/move", teamWrite, s.moveWorkspace)
	add("GET", "/v1/workspaces/{ws}/check", teamRead, s.checkWorkspace)
	add("GET", "/v1/workspaces/{ws}/events", teamRead, s.workspaceEvents)
	add("GET", "/v1/workspaces/{ws}/snapshots", teamRead, s.listSnapshots)
	add("POST", "/v1/workspaces/{ws}/snapshots", teamWrite, s.createSnapshot)
	add("GET", "/v1/workspaces/{ws}/snapshots/{name}", teamRead, s.getSnapshot)
	add("DELETE", "/v1/workspaces/{ws}/snapshots/{name}", teamWrite, s.deleteSnapshot)
	add("POST", "/v1/workspaces/{ws}/snapshots/{name}/restore", teamWrite, s.restoreSnapshot)

	add("GET", "/v1/sessions", teamRead, s.listSessions)
	add("POST", "/v1/sessions", teamWrite, s.createSession)
	add("GET", "/v1/sessions/{s}", teamRead, s.getSession)
	add("DELETE", "/v1/sessions/{s}", teamWrite, s.sessionOp(s.sessions.Delete))
	add("POST", "/v1/sessions/{s}/resume", teamWrite, s.sessionOp(s.sessions.Resume))
	add("POST", "/v1/sessions/{s}/stop", teamWrite, s.sessionOp(s.sessions.Stop))
	add("POST", "/v1/sessions/{s}/fork", teamWrite, s.forkSession)
	add("GET", "/v1/sessions/{s}/events", teamRead, s.sessionEvents)
}

func (s *Server) wsView(r *http.Request, w *store.Workspace) api.Workspace {
	return s.mgr.Workspaces().API(r.Context(), w, true)
}

func (s *Server) listStorages(_ http.ResponseWriter, _ *http.Request) (int, any, error) {
	return 200, s.mgr.Workspaces().Storages(), nil
}

func (s *Server) listWorkspaces(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := pageOf(r)
	if err != nil {
		return 0, nil, err
	}
	ws, err := s.mgr.Store().Workspaces(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := api.WorkspaceList{Workspaces: []api.Workspace{}}
	for _, w := range ws {
		out.Workspaces = append(out.Workspaces, s.mgr.Workspaces().API(r.Context(), w, false))
	}
	out.Workspaces, out.Next = paginate(out.Workspaces, func(w api.Workspace) string { return w.Name }, p)
	return 200, out, nil
}

func (s *Server) createWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateWorkspaceRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	ws, err := s.mgr.Workspaces().Create(r.Context(), req)
	if err != nil {
		return 0, nil, err
	}
	w.Header().Set("Location", "/v1/workspaces/"+url.PathEscape(ws.Name))
	return http.StatusCreated, s.wsView(r, ws), nil
}

func (s *Server) getWorkspace(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ws, err := s.mgr.Workspaces().Get(r.Context(), r.PathValue("ws"))
	if err != nil {
		return 0, nil, err
	}
	return 200, s.wsView(r, ws), nil
}

func (s *Server) deleteWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	ws, err := s.mgr.Workspaces().Delete(r.Context(), r.PathValue("ws"))
	if err != nil {
		return 0, nil, err
	}
	return 200, s.mgr.Workspaces().API(r.Context(), ws, false), nil
}

func (s *Server) attachWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.AttachRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	if req.Sandbox == "" {
		return 0, nil, api.FieldError("sandbox", "is required (name, VMID or id)")
	}
	if _, err := s.mgr.AttachWorkspace(r.Context(), req.Sandbox, r.PathValue("ws")); err != nil {
		return 0, nil, err
	}
	return s.getWorkspace(w, r)
}

func (s *Server) detachWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	if _, err := s.mgr.DetachWorkspace(r.Context(), r.PathValue("ws")); err != nil {
		return 0, nil, err
	}
	return s.getWorkspace(w, r)
}

func (s *Server) resizeWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ResizeWorkspaceRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	ws, err := s.mgr.Workspaces().Resize(r.Context(), r.PathValue("ws"), req)
	if err != nil {
		return 0, nil, err
	}
	return 200, s.wsView(r, ws), nil
}

func (s *Server) moveWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.MoveWorkspaceRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	ws, err := s.mgr.Workspaces().Move(r.Context(), r.PathValue("ws"), req)
	if err != nil {
		return 0, nil, err
	}
	return 200, s.wsView(r, ws), nil
}

func (s *Server) forkWorkspace(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ForkRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	ws, err := s.mgr.Workspaces().Fork(r.Context(), r.PathValue("ws"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, s.wsView(r, ws), nil
}

func (s *Server) checkWorkspace(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	live, err := s.mgr.Store().Sandboxes(r.Context(), store.Filter{})
	if err != nil {
		return 0, nil, err
	}
	vmids := map[string]workspace.SandboxVM{}
	for _, sb := range live {
		if sb.VMID != 0 {
			vmids[sb.ID] = workspace.SandboxVM{VMID: sb.VMID, Node: sb.Node}
		}
	}
	res, err := s.mgr.Workspaces().Check(r.Context(), r.PathValue("ws"), vmids)
	if err != nil {
		return 0, nil, err
	}
	return 200, res, nil
}

func (s *Server) workspaceEvents(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ws, err := s.mgr.Workspaces().Get(r.Context(), r.PathValue("ws"))
	if err != nil {
		return 0, nil, err
	}
	// Names are unique per team only: a global caller's lookup by id must
	// not list another team's workspace of that name.
	return s.eventList(r, store.EventFilter{Workspace: ws.Name, Team: ws.Team})
}

func (s *Server) listSnapshots(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	snaps, err := s.mgr.Workspaces().Snapshots(r.Context(), r.PathValue("ws"))
	if err != nil {
		return 0, nil, err
	}
	return 200, api.SnapshotList{Snapshots: snaps}, nil
}

func (s *Server) getSnapshot(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	snaps, err := s.mgr.Workspaces().Snapshots(r.Context(), r.PathValue("ws"))
	if err != nil {
		return 0, nil, err
	}
	for _, sn := range snaps {
		if sn.Name == r.PathValue("name") {
			return 200, sn, nil
		}
	}
	return 0, nil, api.Errorf(http.StatusNotFound, api.CodeSnapshotNotFound, "workspace %s has no snapshot %q", r.PathValue("ws"), r.PathValue("name"))
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateSnapshotRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	sn, err := s.mgr.Workspaces().CreateSnapshot(r.Context(), r.PathValue("ws"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, sn, nil
}

func (s *Server) deleteSnapshot(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	if err := s.mgr.Workspaces().DeleteSnapshot(r.Context(), r.PathValue("ws"), r.PathValue("name")); err != nil {
		return 0, nil, err
	}
	return 200, map[string]string{"deleted": r.PathValue("name")}, nil
}

func (s *Server) restoreSnapshot(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	sn, err := s.mgr.Workspaces().RestoreSnapshot(r.Context(), r.PathValue("ws"), r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	return 200, sn, nil
}

func (s *Server) listSessions(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := pageOf(r)
	if err != nil {
		return 0, nil, err
	}
	xs, err := s.sessions.List(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := api.SessionList{Sessions: []api.Session{}}
	for _, x := range xs {
		out.Sessions = append(out.Sessions, s.sessions.API(r.Context(), x))
	}
	out.Sessions, out.Next = paginate(out.Sessions, func(x api.Session) string { return x.Name }, p)
	return 200, out, nil
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateSessionRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	x, err := s.sessions.Create(r.Context(), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, s.sessions.API(r.Context(), x), nil
}

func (s *Server) getSession(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	x, err := s.sessions.Get(r.Context(), r.PathValue("s"))
	if err != nil {
		return 0, nil, err
	}
	return 200, s.sessions.API(r.Context(), x), nil
}

func (s *Server) sessionOp(fn func(ctx context.Context, ref string) (*store.Session, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) (int, any, error) {
		var empty struct{}
		if err := decode(w, r, &empty, true); err != nil {
			return 0, nil, err
		}
		x, err := fn(r.Context(), r.PathValue("s"))
		if err != nil {
			return 0, nil, err
		}
		return 200, s.sessions.API(r.Context(), x), nil
	}
}

func (s *Server) forkSession(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ForkSessionRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	x, err := s.sessions.Fork(r.Context(), r.PathValue("s"), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, s.sessions.API(r.Context(), x), nil
}

func (s *Server) sessionEvents(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	x, err := s.sessions.Get(r.Context(), r.PathValue("s"))
	if err != nil {
		return 0, nil, err
	}
	return s.eventList(r, store.EventFilter{Session: x.Name, Team: x.Team})
}
