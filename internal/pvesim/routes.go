package pvesim

import (
	"regexp"
	"strings"
)

type route struct {
	method  string
	pattern string
	segs    []string
	handler func(s *Sim, r *request) (any, error)
}

var routes []*route

func handle(method, pattern string, h func(s *Sim, r *request) (any, error)) {
	routes = append(routes, &route{method: method, pattern: pattern, segs: strings.Split(strings.Trim(pattern, "/"), "/"), handler: h})
}

var upidRE = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`)

// match finds the route for a decoded path. A path that exists with another
// method is still "not implemented", as in PVE.
func match(method, path string) (*route, map[string]string) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for _, rt := range routes {
		if rt.method != method {
			continue
		}
		vars, ok := matchSegs(rt.segs, segs)
		if ok {
			return rt, vars
		}
	}
	return nil, nil
}

func matchSegs(pat, segs []string) (map[string]string, bool) {
	vars := map[string]string{}
	for i, p := range pat {
		if i >= len(segs) {
			return nil, false
		}
		if strings.HasPrefix(p, "{") {
			name := strings.Trim(p, "{}")
			if name == "volume" && i == len(pat)-1 {
				// dir volids contain '/', and go-proxmox does not escape them.
				vars[name] = strings.Join(segs[i:], "/")
				return vars, true
			}
			if segs[i] == "" {
				return nil, false
			}
			vars[name] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return vars, len(pat) == len(segs)
}

func init() {
	const q = "/nodes/{node}/qemu/{vmid}"
	handle("POST", "/access/ticket", (*Sim).login)
	handle("GET", "/version", (*Sim).version)
	handle("GET", "/cluster/status", (*Sim).clusterStatus)
	handle("GET", "/cluster/nextid", (*Sim).nextID)
	handle("GET", "/cluster/resources", (*Sim).resources)
	handle("GET", "/cluster/tasks", (*Sim).clusterTasks)
	handle("GET", "/cluster/firewall/groups", (*Sim).listFwGroups)
	handle("POST", "/cluster/firewall/groups", (*Sim).createFwGroup)
	handle("GET", "/cluster/firewall/groups/{group}", (*Sim).listFwGroupRules)
	handle("POST", "/cluster/firewall/groups/{group}", (*Sim).createFwGroupRule)
	handle("DELETE", "/cluster/firewall/groups/{group}", (*Sim).deleteFwGroup)
	handle("GET", "/cluster/firewall/groups/{group}/{pos}", (*Sim).getFwRule)
	handle("PUT", "/cluster/firewall/groups/{group}/{pos}", (*Sim).updateFwRule)
	handle("DELETE", "/cluster/firewall/groups/{group}/{pos}", (*Sim).deleteFwRule)
	handle("GET", "/access/permissions", (*Sim).permissions)
	handle("GET", "/pools", (*Sim).listPools)
	handle("POST", "/pools", (*Sim).createPool)
	handle("PUT", "/pools", (*Sim).updatePool)
	handle("DELETE", "/pools", (*Sim).deletePool)
	handle("GET", "/pools/{poolid}", (*Sim).getPool)
	handle("PUT", "/pools/{poolid}", (*Sim).updatePool)
	handle("DELETE", "/pools/{poolid}", (*Sim).deletePool)
	handle("GET", "/nodes", (*Sim).listNodes)
	handle("GET", "/nodes/{node}/status", (*Sim).nodeStatus)
	handle("GET", "/nodes/{node}/tasks", (*Sim).listTasks)
	handle("GET", "/nodes/{node}/tasks/{upid}/status", (*Sim).getTaskStatus)
	handle("GET", "/nodes/{node}/tasks/{upid}/log", (*Sim).getTaskLog)
	handle("DELETE", "/nodes/{node}/tasks/{upid}", (*Sim).stopTask)
	handle("GET", "/nodes/{node}/storage", (*Sim).listStorages)
	handle("GET", "/nodes/{node}/storage/{storage}/status", (*Sim).storageStatus)
	handle("GET", "/nodes/{node}/storage/{storage}/content", (*Sim).listContent)
	handle("POST", "/nodes/{node}/storage/{storage}/content", (*Sim).allocContent)
	handle("GET", "/nodes/{node}/storage/{storage}/content/{volume}", (*Sim).volumeInfo)
	handle("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}", (*Sim).deleteContent)
	handle("POST", "/nodes/{node}/storage/{storage}/content/{volume}", (*Sim).copyContent)
	handle("GET", "/nodes/{node}/qemu", (*Sim).listVMs)
	handle("POST", "/nodes/{node}/qemu", (*Sim).createVM)
	handle("DELETE", q, (*Sim).destroyVM)
	handle("GET", q+"/status/current", (*Sim).vmStatus)
	handle("POST", q+"/status/start", (*Sim).startVM)
	handle("POST", q+"/status/stop", (*Sim).stopVM)
	handle("POST", q+"/status/shutdown", (*Sim).shutdownVM)
	handle("POST", q+"/status/reboot", (*Sim).rebootVM)
	handle("POST", q+"/status/suspend", (*Sim).suspendVM)
	handle("POST", q+"/status/resume", (*Sim).resumeVM)
	handle("GET", q+"/config", (*Sim).getConfig)
	handle("POST", q+"/config", (*Sim).postConfig)
	handle("PUT", q+"/config", (*Sim).putConfig)
	handle("GET", q+"/pending", (*Sim).pending)
	handle("POST", q+"/clone", (*Sim).cloneVM)
	handle("GET", q+"/migrate", (*Sim).migratePrecondition)
	handle("POST", q+"/migrate", (*Sim).migrateVM)
	handle("PUT", q+"/resize", (*Sim).resize)
	handle("POST", q+"/template", (*Sim).template)
	handle("PUT", q+"/unlink", (*Sim).unlink)
	handle("POST", q+"/move_disk", (*Sim).moveDisk)
	handle("GET", q+"/feature", (*Sim).feature)
	handle("GET", q+"/rrddata", (*Sim).rrddata)
	handle("POST", q+"/agent/ping", (*Sim).agentPing)
	handle("GET", q+"/agent/get-osinfo", (*Sim).agentOSInfo)
	handle("GET", q+"/agent/network-get-interfaces", (*Sim).agentInterfaces)
	handle("GET", q+"/firewall/options", (*Sim).vmFwOptions)
	handle("PUT", q+"/firewall/options", (*Sim).setVMFwOptions)
	handle("GET", q+"/firewall/rules", (*Sim).listVMFwRules)
	handle("POST", q+"/firewall/rules", (*Sim).createVMFwRule)
	handle("GET", q+"/firewall/rules/{pos}", (*Sim).getFwRule)
	handle("PUT", q+"/firewall/rules/{pos}", (*Sim).updateFwRule)
	handle("DELETE", q+"/firewall/rules/{pos}", (*Sim).deleteFwRule)
	handle("GET", q+"/snapshot", (*Sim).listSnapshots)
	handle("POST", q+"/snapshot", (*Sim).createSnapshot)
	handle("GET", q+"/snapshot/{snapname}/config", (*Sim).snapshotConfig)
	handle("PUT", q+"/snapshot/{snapname}/config", (*Sim).updateSnapshotConfig)
	handle("POST", q+"/snapshot/{snapname}/rollback", (*Sim).rollback)
	handle("DELETE", q+"/snapshot/{snapname}", (*Sim).deleteSnapshot)
}
