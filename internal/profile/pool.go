package profile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// Pool is a profile's warm pool: agentd keeps MinReady VMs booted and
// unassigned, never more than Max members (ready and building) at once.
type Pool struct {
	MinReady int `yaml:"min_ready"`
	Max      int `yaml:"max"`
}

func (p *Pool) validate() error {
	if p == nil {
		return nil
	}
	// One rule for the profile key and the runtime override (PUT /v1/pools).
	if err := api.ValidatePool("pool.", p.MinReady, p.Max); err != nil {
		return errors.New(err.Message)
	}
	return nil
}

// Hash is the profile's version as far as its VMs are concerned: everything
// that shapes a VM (template, resources, storage, network, secrets,
// behaviour), not the pool sizes, the description or the file it came from.
// A pooled VM built from another hash is replaced.
func (p *Profile) Hash() string {
	c := *p
	c.Pool, c.Source, c.Description = nil, "", ""
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
