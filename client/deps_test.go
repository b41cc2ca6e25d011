package client

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A program that only dials the daemon links no cache engine: package
// client imports the standard library, x/sys and modelcache's api, errs
// and resolve, and nothing of tier, server or the tiers below them (nor
// Badger, go-redis or Prometheus through them).
func TestClient_LinksNoEngine(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go tool is not on PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/modelcache/modelcache/client").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/modelcache/modelcache/api")

	const mod = "github.com/modelcache/modelcache/"
	allowed := map[string]bool{mod + "client": true, mod + "api": true, mod + "errs": true, mod + "resolve": true, mod + "internal/shmwire": true}
	forbidden := []string{"badger", "go-redis", "prometheus"}
	engine := []string{"tier", "server", "l1", "l2", "l3", "loader", "serialize"}
	for _, d := range deps {
		for _, f := range forbidden {
			require.NotContains(t, d, f, "client links %s", d)
		}
		if rest, ok := strings.CutPrefix(d, mod); ok {
			for _, e := range engine {
				require.False(t, rest == e || strings.HasPrefix(rest, e+"/"), "client links %s", d)
			}
			require.True(t, allowed[d], "client links %s: only api, errs, resolve and internal/shmwire of modelcache are allowed", d)
		}
	}
}
