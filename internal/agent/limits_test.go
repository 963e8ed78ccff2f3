package agent_test

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/agent"
	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/config"
)

// TestConcurrentCreatesAgainstALimitOfOne: eight creates at once against
// max_sandboxes 1: exactly one is admitted, every other gets 429
// sandbox_limit_reached naming the key, its value and the use; a retry of
// the winner's request is still idempotent.
func TestConcurrentCreatesAgainstALimitOfOne(t *testing.T) {
	_, c := startDev(t, agent.DevOptions{Configure: func(cfg *config.Config) { cfg.MaxSandboxes = 1 }})
	ctx := tctx(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("race%d", i), Profile: "yolo-ephemeral"})
		}(i)
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		var ae *api.Error
		switch {
		case err == nil && won >= 0:
			t.Errorf("race%d and race%d were both admitted with max_sandboxes 1", won, i)
		case err == nil:
			won = i
		case !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != api.CodeSandboxLimit ||
			ae.Limit == nil || *ae.Limit != (api.Limit{Key: "max_sandboxes", Value: 1, Used: 1}):
			t.Errorf("race%d: %#v, want 429 sandbox_limit_reached at 1 of 1", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no create was admitted")
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: fmt.Sprintf("race%d", won), Profile: "yolo-ephemeral"}); err != nil {
		t.Errorf("retry of the admitted create: %v", err)
	}
}

// TestTTLAndProfileLimits: max_ttl bounds create and renew (and refuses "no
// lease"); max_sandboxes_per_profile counts one profile only.
func TestTTLAndProfileLimits(t *testing.T) {
	_, c := startDev(t, agent.DevOptions{Configure: func(cfg *config.Config) {
		cfg.MaxTTL, cfg.MaxSandboxesPerProfile = 4*time.Hour, 1
	}})
	ctx := tctx(t)
	for _, ttl := range []string{"5h", "0"} {
		_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "long", Profile: "yolo-ephemeral", TTL: ttl})
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != api.CodeTTLTooLong || ae.Field != "ttl" || ae.Limit == nil || ae.Limit.Value != 4*3600 {
			t.Errorf("ttl %s: %#v, want 400 ttl_exceeds_max_ttl", ttl, err)
		}
	}
	create(t, c, "ok")
	if _, err := c.Renew(ctx, "ok", "5h"); !api.IsCode(err, api.CodeTTLTooLong) {
		t.Errorf("renew past max_ttl: %v", err)
	}
	if _, err := c.Renew(ctx, "ok", "4h"); err != nil {
		t.Errorf("renew within max_ttl: %v", err)
	}
	_, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "second", Profile: "yolo-ephemeral"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeProfileSandboxLimit || ae.Limit == nil || ae.Limit.Used != 1 {
		t.Errorf("second of a profile: %#v, want 429 profile_sandbox_limit_reached", err)
	}
	if _, err := c.CreateSandbox(ctx, api.CreateSandboxRequest{Name: "other", Profile: "interactive-dev", TTL: "1h"}); err != nil {
		t.Errorf("another profile: %v", err)
	}
}
