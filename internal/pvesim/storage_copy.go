package pvesim

import (
	"fmt"
	"strings"
)

// copyContent is POST /nodes/{node}/storage/{storage}/content/{volume}
// (pve-storage API2/Storage/Content.pm "copy"): source and target are resolved
// with $real_volume_id (a bare name takes the path's storage) and an imgcopy
// worker copies the volume with storage_migrate to the local node.
func (s *Sim) copyContent(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src, err := realVolumeID(req.vars["storage"], req.vars["volume"])
	if err != nil {
		return nil, err
	}
	dst, err := realVolumeID(req.vars["storage"], req.str("target"))
	if err != nil {
		return nil, err
	}
	node := req.vars["node"]
	if tn := req.str("target_node"); tn != "" && tn != node {
		return nil, errf("copy to another node is not simulated")
	}
	return s.startTask(req, node, "imgcopy", "", func(w *worker) error {
		w.logf("DEBUG: COPY %s TO %s", src, dst)
		ssid, svn, _ := strings.Cut(src, ":")
		dsid, dvn, _ := strings.Cut(dst, ":")
		sst, err := s.storageOn(node, ssid)
		if err != nil {
			return err
		}
		dstSt, err := s.storageOn(node, dsid)
		if err != nil {
			return err
		}
		vol, ok := sst.volumes[svn]
		if !ok {
			return fmt.Errorf("no such volume '%s'", src)
		}
		if _, exists := dstSt.volumes[dvn]; exists {
			return fmt.Errorf("volume '%s' already exists", dst)
		}
		if err := w.wait(); err != nil {
			return err
		}
		nv, err := s.allocVolume(dstSt, ownerOf(dvn), vol.size, dvn)
		if err != nil {
			return err
		}
		nv.files = copyFiles(vol.files)
		return nil
	}), nil
}

// realVolumeID is Content.pm's $real_volume_id, with its parameter exceptions.
func realVolumeID(storeID, volume string) (string, error) {
	if sid, _, ok := strings.Cut(volume, ":"); ok {
		if storeID != "" && sid != storeID {
			return "", paramErr(map[string]string{"volume": fmt.Sprintf("storage ID mismatch (%s != %s)\n", sid, storeID)})
		}
		return volume, nil
	}
	if storeID == "" {
		return "", paramErr(map[string]string{"volume": "no storage specified - incomplete volume ID"})
	}
	return storeID + ":" + volume, nil
}
