package server

import (
	"net/http"
	"strconv"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Routes for working inside a sandbox: exec, snapshots, hibernate, resize.
func (s *Server) accessRoutes(add func(method, path string, p perm, h handler)) {
	add("POST", "/v1/sandboxes/{ref}/exec", teamWrite, s.exec)
	add("GET", "/v1/sandboxes/{ref}/snapshots", teamRead, s.listSandboxSnapshots)
	add("POST", "/v1/sandboxes/{ref}/snapshots", teamWrite, s.createSandboxSnapshot)
	add("GET", "/v1/sandboxes/{ref}/snapshots/{name}", teamRead, s.getSandboxSnapshot)
	add("DELETE", "/v1/sandboxes/{ref}/snapshots/{name}", teamWrite, s.deleteSandboxSnapshot)
	add("POST", "/v1/sandboxes/{ref}/snapshots/{name}/restore", teamWrite, s.restoreSandboxSnapshot)
	add("POST", "/v1/sandboxes/{ref}/hibernate", teamWrite, s.op(s.mgr.Hibernate))
	add("POST", "/v1/sandboxes/{ref}/resume", teamWrite, s.op(s.mgr.ResumeHibernated))
	add("POST", "/v1/sandboxes/{ref}/revert", teamWrite, s.revert)
	add("POST", "/v1/sandboxes/{ref}/resize", teamWrite, s.resize)
	add("GET", "/v1/sandboxes/{ref}/ports", teamRead, s.listPorts)
	add("POST", "/v1/sandboxes/{ref}/ports", teamWrite, s.expose)
	add("DELETE", "/v1/sandboxes/{ref}/ports/{port}", teamWrite, s.unexpose)
	add("GET", "/v1/ports", hostRead, s.listPorts)
	add("GET", "/v1/sandboxes/{ref}/hostkey", teamRead, s.hostKey)
}

func (s *Server) hostKey(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	k, err := s.mgr.HostKey(r.Context(), r.PathValue("ref"))
	if err != nil {
		return 0, nil, err
	}
	return 200, k, nil
}

func (s *Server) listPorts(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	ports, err := s.mgr.ExposedPorts(r.Context(), r.PathValue("ref"))
	if err != nil {
		return 0, nil, err
	}
	return 200, api.ExposedPortList{Ports: ports}, nil
}

func (s *Server) expose(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ExposeRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	p, err := s.mgr.Expose(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		return 0, nil, err
	}
	return 201, p, nil
}

func (s *Server) unexpose(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		return 0, nil, api.FieldError("port", "%q is not a TCP port", r.PathValue("port"))
	}
	if err := s.mgr.Unexpose(r.Context(), r.PathValue("ref"), port); err != nil {
		return 0, nil, err
	}
	return 200, map[string]int{"unexposed": port}, nil
}

func (s *Server) revert(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.RevertRequest
	if err := decode(w, r, &req, true); err != nil {
		return 0, nil, err
	}
	sb, err := s.mgr.Revert(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		return 0, nil, err
	}
	return 200, sb.Sandbox, nil
}

func (s *Server) resize(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ResizeRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	res, err := s.mgr.Resize(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		return 0, nil, err
	}
	return 200, res, nil
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.ExecRequest
	if err := decodeMax(w, r, &req, false, 8*api.ExecMaxStdin); err != nil {
		return 0, nil, err
	}
	res, err := s.mgr.Exec(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		return 0, nil, err
	}
	return 200, res, nil
}

func (s *Server) listSandboxSnapshots(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	snaps, err := s.mgr.Snapshots(r.Context(), r.PathValue("ref"))
	if err != nil {
		return 0, nil, err
	}
	return 200, api.SandboxSnapshotList{Snapshots: snaps}, nil
}

func (s *Server) getSandboxSnapshot(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	snaps, err := s.mgr.Snapshots(r.Context(), r.PathValue("ref"))
	if err != nil {
		return 0, nil, err
	}
	for _, sn := range snaps {
		if sn.Name == r.PathValue("name") {
			return 200, sn, nil
		}
	}
	return 0, nil, api.Errorf(http.StatusNotFound, api.CodeSnapshotNotFound, "sandbox %s has no snapshot %q", r.PathValue("ref"), r.PathValue("name"))
}

func (s *Server) createSandboxSnapshot(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.CreateSandboxSnapshotRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	sn, err := s.mgr.CreateSnapshot(r.Context(), r.PathValue("ref"), req)
	if err != nil {
		return 0, nil, err
	}
	return 201, sn, nil
}

func (s *Server) deleteSandboxSnapshot(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	if err := s.mgr.DeleteSnapshot(r.Context(), r.PathValue("ref"), r.PathValue("name")); err != nil {
		return 0, nil, err
	}
	return 200, map[string]string{"deleted": r.PathValue("name")}, nil
}

func (s *Server) restoreSandboxSnapshot(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	sb, err := s.mgr.RestoreSnapshot(r.Context(), r.PathValue("ref"), r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	return 200, sb.Sandbox, nil
}
