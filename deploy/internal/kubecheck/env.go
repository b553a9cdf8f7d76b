package kubecheck

import (
	"encoding/base64"
	"testing"
)

// What the kubelet fills in for the downward API in these checks.
const (
	HostIP = "10.0.0.5"
	PodIP  = "10.244.1.7"
	Region = "region-a"
	Zone   = "zone-a1"
)

var downward = map[string]string{
	"status.hostIP": HostIP,
	"status.podIP":  PodIP,
	"spec.nodeName": "node-1",
	"metadata.labels['topology.kubernetes.io/region']": Region,
	"metadata.labels['topology.kubernetes.io/zone']":   Zone,
}

// Env is the container's environment as the kubelet would set it: literal
// values, the downward API fields above, and keys of Secrets (a Secret
// among the objects gives its value; one the operator creates gives a
// placeholder long enough for a join token).
func (m Objects) Env(t testing.TB, c Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.Value != nil:
			env[e.Name] = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			v, ok := downward[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Errorf("env %s: fieldRef %q is not one the checks know", e.Name, e.ValueFrom.FieldRef.FieldPath)
				continue
			}
			env[e.Name] = v
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name == "" || ref.Key == "" {
				t.Errorf("env %s: secretKeyRef without name or key", e.Name)
				continue
			}
			s, ok := m.Secrets[ref.Name]
			if !ok {
				env[e.Name] = "placeholder-from-secret-" + ref.Name + "-" + ref.Key
				continue
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				t.Errorf("env %s: the Secret %s has no key %s", e.Name, ref.Name, ref.Key)
				continue
			}
			if s.Base64[ref.Key] {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					t.Errorf("Secret %s: key %s is not base64: %v", ref.Name, ref.Key, err)
				}
				v = string(b)
			}
			env[e.Name] = v
		default:
			t.Errorf("env %s has neither a value nor a valueFrom the checks know", e.Name)
		}
	}
	return env
}
