package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/secrets"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// upload receives one artifact. An artifact name is written once per owner
// (its job, else its sandbox): a second upload of the name is a 409 and the
// first file stays as recorded. A name cannot pass through another
// artifact's file ("conf" then "conf/sub") nor be a directory of others.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	t, sb, ok := s.authorize(w, r, store.TokenArtifact)
	if !ok {
		return
	}
	name := r.URL.Query().Get("name")
	if err := ValidName(name); err != nil {
		fail(w, http.StatusBadRequest, api.CodeInvalidField, "name: "+err.Error())
		return
	}
	owner := sb.ID
	if t.JobID != "" {
		owner = t.JobID
	}
	root := filepath.Join(s.opts.ArtifactDir, owner)
	dst := filepath.Join(root, filepath.FromSlash(name))
	if err := checkPlace(root, name); err != nil {
		s.failErr(w, "upload", sb, err)
		return
	}
	res, err := s.quotas.begin(ctx, sb.ID, t.JobID, sb.Team)
	if err != nil {
		s.failErr(w, "upload", sb, err)
		return
	}
	defer res.end()
	var mask []string
	if name == api.JobLogName {
		if mask, err = s.secretValues(sb); err != nil {
			s.failErr(w, "upload", sb, err)
			return
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		s.failErr(w, "upload", sb, fmt.Errorf("artifact directory: %w", err))
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		s.failErr(w, "upload", sb, fmt.Errorf("artifact temp file: %w", err))
		return
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // after the link below, the artifact's other name
	}()

	rc := http.NewResponseController(w)
	body := &rateReader{r: r.Body, rc: rc, min: s.opts.UploadMinRate * int64(s.opts.UploadRateWindow/time.Second), window: s.opts.UploadRateWindow}
	body.start()
	h := sha256.New()
	masker := secrets.NewMasker(io.MultiWriter(tmp, h), mask)
	n, err := io.Copy(masker, http.MaxBytesReader(w, io.NopCloser(&quotaReader{r: body, res: res}), s.opts.MaxBytes))
	if err == nil {
		err = masker.Close()
	}
	// The body is in (or abandoned): the answer must not wait on a guest that
	// stopped reading either.
	_ = rc.SetWriteDeadline(time.Now().Add(s.opts.ReadTimeout))
	var mbe *http.MaxBytesError
	var ae *api.Error
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		w.Header().Set("Connection", "close")
		writeErr(w, ae) // a quota, with its limit
		return
	case errors.As(err, &mbe):
		w.Header().Set("Connection", "close")
		writeErr(w, api.LimitError(http.StatusRequestEntityTooLarge, api.CodeArtifactTooLarge, "artifact_max_bytes", s.opts.MaxBytes, n,
			"artifact exceeds artifact_max_bytes (%d)", s.opts.MaxBytes))
		return
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		s.log.Warn("slow artifact upload cut off", "sandbox_id", sb.ID, "name", name, "bytes", n)
		writeErr(w, api.LimitError(http.StatusRequestTimeout, api.CodeUploadTooSlow, "guest_upload_min_rate", s.opts.UploadMinRate, 0,
			"upload slower than guest_upload_min_rate (%d bytes/s over %s): cut off after %d bytes", s.opts.UploadMinRate, s.opts.UploadRateWindow, n))
		return
	case err != nil:
		fail(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("upload interrupted after %d bytes", n))
		return
	case n == 0:
		fail(w, http.StatusBadRequest, api.CodeBadRequest, "empty artifact")
		return
	}
	if err := tmp.Sync(); err != nil {
		s.failErr(w, "upload", sb, fmt.Errorf("sync artifact: %w", err))
		return
	}
	if err := tmp.Chmod(0o640); err != nil {
		s.failErr(w, "upload", sb, fmt.Errorf("chmod artifact: %w", err))
		return
	}
	// Link, not rename: it fails when the name exists, so a concurrent
	// upload of the same name cannot replace the first one's file.
	if err := os.Link(tmp.Name(), dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			s.failErr(w, "upload", sb, placeErr(dst, name))
			return
		}
		s.failErr(w, "upload", sb, fmt.Errorf("store artifact: %w", err))
		return
	}
	sum := hex.EncodeToString(h.Sum(nil))
	a := &store.Artifact{SandboxID: sb.ID, JobID: t.JobID, Name: name, Size: n, SHA256: sum, Path: dst}
	msg := fmt.Sprintf("%s (%d bytes, sha256 %s)", name, n, sum[:12])
	if len(mask) > 0 {
		msg += "; secret values masked"
	}
	if err := s.store.AddArtifact(context.WithoutCancel(ctx), a, store.Event{Kind: "artifact.received", Message: msg}); err != nil {
		os.Remove(dst)
		if errors.Is(err, store.ErrConflict) {
			err = exists(name)
		}
		s.failErr(w, "upload", sb, err)
		return
	}
	res.ok = true
	s.met.ArtifactBytes(n)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(api.Artifact{ID: a.ID, SandboxID: a.SandboxID, JobID: a.JobID, Name: a.Name, Size: a.Size, SHA256: a.SHA256, CreatedAt: a.CreatedAt})
}

func writeErr(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
}

func exists(name string) error {
	return api.Errorf(http.StatusConflict, api.CodeArtifactExists, "artifact %q was already uploaded; artifacts are written once (use another name)", name)
}

// checkPlace refuses a name whose parent is another artifact's file or which
// is already taken, before any byte is read.
func checkPlace(root, name string) error {
	parts := strings.Split(name, "/")
	p := root
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("artifact path: %w", err)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return api.FieldError("name", "%q cannot be stored: %q is an artifact, not a directory", name, strings.Join(parts[:i+1], "/"))
		}
	}
	return placeErr(p, name)
}

// placeErr explains why name's place (at path p, which exists) is taken.
func placeErr(p, name string) error {
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return api.FieldError("name", "%q cannot be stored: it is the directory of other artifacts", name)
	}
	return exists(name)
}

// rateReader cuts off a body that delivers less than min bytes in a window:
// every read deadline lasts one window and moves on once the window's bytes
// are in.
type rateReader struct {
	r      io.Reader
	rc     *http.ResponseController
	min    int64
	window time.Duration
	got    int64
}

func (rr *rateReader) start() {
	rr.got = 0
	// ErrNotSupported (a test recorder) leaves the server's deadline.
	_ = rr.rc.SetReadDeadline(time.Now().Add(rr.window))
}

func (rr *rateReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	rr.got += int64(n)
	if rr.got >= rr.min {
		rr.start()
	}
	return n, err
}
