package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/jobs"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// SetJobs enables the job and artifact endpoints.
func (s *Server) SetJobs(j *jobs.Manager) {
	s.jobs = j
	s.handle("POST /v1/jobs", teamWrite, s.wrap(s.runJob))
	s.handle("GET /v1/jobs", teamRead, s.wrap(s.listJobs))
	s.handle("GET /v1/jobs/{id}", teamRead, s.wrap(s.getJob))
	s.handle("POST /v1/jobs/{id}/cancel", teamWrite, s.wrap(s.cancelJob))
	s.handle("GET /v1/jobs/{id}/artifacts", teamRead, s.wrap(s.jobArtifacts))
	s.handle("GET /v1/sandboxes/{ref}/artifacts", teamRead, s.wrap(s.sandboxArtifacts))
	s.handle("GET /v1/artifacts/{id}", teamRead, http.HandlerFunc(s.download))
}

func (s *Server) runJob(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var req api.RunJobRequest
	if err := decode(w, r, &req, false); err != nil {
		return 0, nil, err
	}
	j, err := s.jobs.Run(r.Context(), req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, s.jobs.API(r.Context(), j), nil
}

func (s *Server) listJobs(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	p, err := pageOf(r)
	if err != nil {
		return 0, nil, err
	}
	js, err := s.mgr.Store().Jobs(r.Context(), r.URL.Query().Get("active") == "true")
	if err != nil {
		return 0, nil, err
	}
	// Page before rendering: API() looks up each job's sandbox.
	js, next := paginate(js, func(j *store.Job) string { return newestFirst(j.CreatedAt, j.ID) }, p)
	out := api.JobList{Jobs: []api.Job{}, Next: next}
	for _, j := range js {
		out.Jobs = append(out.Jobs, s.jobs.API(r.Context(), j))
	}
	return 200, out, nil
}

func (s *Server) getJob(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	j, err := s.jobs.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return 200, s.jobs.API(r.Context(), j), nil
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) (int, any, error) {
	var empty struct{}
	if err := decode(w, r, &empty, true); err != nil {
		return 0, nil, err
	}
	j, err := s.jobs.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return 200, s.jobs.API(r.Context(), j), nil
}

func artifactList(r *http.Request, as []*store.Artifact) (int, any, error) {
	p, err := pageOf(r)
	if err != nil {
		return 0, nil, err
	}
	as, next := paginate(as, func(a *store.Artifact) string { return byNumber(a.ID) }, p)
	out := api.ArtifactList{Artifacts: []api.Artifact{}, Next: next}
	for _, a := range as {
		out.Artifacts = append(out.Artifacts, api.Artifact{ID: a.ID, SandboxID: a.SandboxID, JobID: a.JobID, Name: a.Name, Size: a.Size, SHA256: a.SHA256, CreatedAt: a.CreatedAt})
	}
	return 200, out, nil
}

func (s *Server) jobArtifacts(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	j, err := s.jobs.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	as, err := s.mgr.Store().Artifacts(r.Context(), "", j.ID)
	if err != nil {
		return 0, nil, err
	}
	return artifactList(r, as)
}

func (s *Server) sandboxArtifacts(_ http.ResponseWriter, r *http.Request) (int, any, error) {
	sb, err := s.mgr.Get(r.Context(), r.PathValue("ref"))
	if err != nil {
		return 0, nil, err
	}
	as, err := s.mgr.Store().Artifacts(r.Context(), sb.ID, "")
	if err != nil {
		return 0, nil, err
	}
	return artifactList(r, as)
}

// download streams an artifact's bytes (with its SHA-256 in a header). Any
// id that is not a stored one (malformed, negative, out of range) is a 404;
// no answer names a host path.
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("id")
	notFound := func() {
		writeJSON(w, http.StatusNotFound, api.ErrorBody{Error: &api.Error{Code: api.CodeArtifactNotFound, Message: fmt.Sprintf("artifact %q not found", ref)}})
	}
	id, err := strconv.ParseInt(ref, 10, 64)
	if err != nil || id < 1 {
		notFound()
		return
	}
	a, err := s.mgr.Store().ArtifactByID(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		notFound()
		return
	}
	if err != nil {
		s.log.Error("artifact lookup", "id", id, "err", err)
		writeJSON(w, http.StatusInternalServerError, api.ErrorBody{Error: &api.Error{Code: api.CodeInternal, Message: "artifact lookup failed; agentd's log says why"}})
		return
	}
	f, err := os.Open(a.Path)
	if err != nil {
		s.log.Warn("artifact file unreadable", "id", id, "err", err)
		writeJSON(w, http.StatusGone, api.ErrorBody{Error: &api.Error{Code: api.CodeArtifactNotFound, Message: fmt.Sprintf("the file of artifact %d is gone (retention, or removed on the host)", id)}})
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Artifact-SHA256", a.SHA256)
	w.Header().Set("Content-Disposition", `attachment; filename="`+strconv.Quote(a.Name)[1:len(strconv.Quote(a.Name))-1]+`"`)
	http.ServeContent(w, r, a.Name, a.CreatedAt, f)
}
