// Package kubecheck holds the rules that meshreg's Kubernetes objects must
// follow, for the tests of the plain manifest (deploy/kubernetes) and of the
// Helm chart's rendered output (deploy/helm): the objects fit together
// (selectors, ports, probes, volumes), and the real binary accepts the
// container's command line and environment (`meshreg serve --check`). It
// reads YAML only; no Kubernetes is needed.
package kubecheck

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// Meta is an object's metadata, as far as the checks look at it.
type Meta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// object is one YAML document. Unknown top-level fields are refused (a
// typo there is silently dropped by the API server); specs are decoded
// into the types below, which name only the fields the checks look at.
type object struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   Meta              `yaml:"metadata"`
	Spec       yaml.Node         `yaml:"spec"`
	Type       string            `yaml:"type"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
}

// ServiceSpec is the joining Service's spec.
type ServiceSpec struct {
	ClusterIP                string            `yaml:"clusterIP"`
	PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string `yaml:"selector"`
	Ports                    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"`
		Protocol   string `yaml:"protocol"`
	} `yaml:"ports"`
}

// Probe is an HTTP probe.
type Probe struct {
	HTTPGet struct {
		Path   string `yaml:"path"`
		Port   string `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
}

// EnvVar is one entry of a container's env.
type EnvVar struct {
	Name      string  `yaml:"name"`
	Value     *string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		SecretKeyRef *struct {
			Name     string `yaml:"name"`
			Key      string `yaml:"key"`
			Optional bool   `yaml:"optional"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

// Port is a container port.
type Port struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	HostPort      int    `yaml:"hostPort"`
	Protocol      string `yaml:"protocol"`
}

// VolumeMount is a container's volume mount.
type VolumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
	// SubPath mounts one file of the volume: kubelet never updates it, so
	// a file the node reloads must not come through one.
	SubPath string `yaml:"subPath"`
}

// Container is a (init) container of the DaemonSet's pods.
type Container struct {
	Name            string        `yaml:"name"`
	Image           string        `yaml:"image"`
	ImagePullPolicy string        `yaml:"imagePullPolicy"`
	Command         []string      `yaml:"command"`
	Args            []string      `yaml:"args"`
	Env             []EnvVar      `yaml:"env"`
	Ports           []Port        `yaml:"ports"`
	ReadinessProbe  *Probe        `yaml:"readinessProbe"`
	LivenessProbe   *Probe        `yaml:"livenessProbe"`
	VolumeMounts    []VolumeMount `yaml:"volumeMounts"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

// Volume is a volume of the DaemonSet's pods.
type Volume struct {
	Name     string `yaml:"name"`
	HostPath *struct {
		Path string `yaml:"path"`
		Type string `yaml:"type"`
	} `yaml:"hostPath"`
	Secret *struct {
		SecretName string      `yaml:"secretName"`
		Optional   bool        `yaml:"optional"`
		Items      []KeyToPath `yaml:"items"`
	} `yaml:"secret"`
	ConfigMap *struct {
		Name     string      `yaml:"name"`
		Optional bool        `yaml:"optional"`
		Items    []KeyToPath `yaml:"items"`
	} `yaml:"configMap"`
}

// KeyToPath is an item of a Secret or ConfigMap volume.
type KeyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

// VolumeSource describes a Secret or ConfigMap volume: "Secret NAME" or
// "ConfigMap NAME", and its items; "" for any other volume.
func VolumeSource(v *Volume) (string, []KeyToPath) {
	switch {
	case v.Secret != nil:
		return "Secret " + v.Secret.SecretName, v.Secret.Items
	case v.ConfigMap != nil:
		return "ConfigMap " + v.ConfigMap.Name, v.ConfigMap.Items
	}
	return "", nil
}

// DaemonSetSpec is the DaemonSet's spec.
type DaemonSetSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	UpdateStrategy struct {
		Type          string `yaml:"type"`
		RollingUpdate struct {
			MaxUnavailable int `yaml:"maxUnavailable"`
		} `yaml:"rollingUpdate"`
	} `yaml:"updateStrategy"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds int               `yaml:"terminationGracePeriodSeconds"`
			PriorityClassName             string            `yaml:"priorityClassName"`
			NodeSelector                  map[string]string `yaml:"nodeSelector"`
			Tolerations                   []map[string]any  `yaml:"tolerations"`
			InitContainers                []Container       `yaml:"initContainers"`
			Containers                    []Container       `yaml:"containers"`
			Volumes                       []Volume          `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

// Secret is a Secret among the objects (one the chart creates).
type Secret struct {
	Meta Meta
	Type string
	// Data holds both data (base64, as written) and stringData entries;
	// Base64 tells which.
	Data   map[string]string
	Base64 map[string]bool
}

// Objects are the Kubernetes objects of one manifest: exactly one Service
// and one DaemonSet, an optional Namespace, and any number of Secrets.
type Objects struct {
	Source        string // a file name, for messages
	Raw           string
	Namespace     *Meta
	ServiceMeta   Meta
	Service       ServiceSpec
	DaemonSetMeta Meta
	DaemonSet     DaemonSetSpec
	Secrets       map[string]Secret
}

var apiVersions = map[string]string{"Namespace": "v1", "Service": "v1", "DaemonSet": "apps/v1", "Secret": "v1"}

// Parse decodes every YAML document of b; source names b in messages.
func Parse(t testing.TB, source string, b []byte) Objects {
	t.Helper()
	m := Objects{Source: source, Raw: string(b), Secrets: map[string]Secret{}}
	seen := map[string]int{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	for i := 0; ; i++ {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		if o.Kind == "" {
			t.Fatalf("%s: document %d has no kind", source, i)
		}
		want, ok := apiVersions[o.Kind]
		if !ok {
			t.Errorf("%s: unexpected %s %s", source, o.Kind, o.Metadata.Name)
			continue
		}
		if o.APIVersion != want {
			t.Errorf("%s: %s: apiVersion %q, want %q", source, o.Kind, o.APIVersion, want)
		}
		seen[o.Kind]++
		if o.Metadata.Name == "" {
			t.Errorf("%s: a %s has no name", source, o.Kind)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace == "" {
			t.Errorf("%s: %s %s has no namespace", source, o.Kind, o.Metadata.Name)
		}
		var spec any
		switch o.Kind {
		case "Namespace":
			meta := o.Metadata
			m.Namespace = &meta
			continue
		case "Secret":
			s := Secret{Meta: o.Metadata, Type: o.Type, Data: map[string]string{}, Base64: map[string]bool{}}
			for k, v := range o.Data {
				s.Data[k], s.Base64[k] = v, true
			}
			for k, v := range o.StringData {
				s.Data[k] = v
			}
			m.Secrets[o.Metadata.Name] = s
			continue
		case "Service":
			m.ServiceMeta, spec = o.Metadata, &m.Service
		case "DaemonSet":
			m.DaemonSetMeta, spec = o.Metadata, &m.DaemonSet
		}
		if err := o.Spec.Decode(spec); err != nil {
			t.Fatalf("%s: %s spec: %v", source, o.Kind, err)
		}
	}
	for _, k := range []string{"Service", "DaemonSet"} {
		if seen[k] != 1 {
			t.Fatalf("%s: %d %s objects, want 1", source, seen[k], k)
		}
	}
	if seen["Namespace"] > 1 {
		t.Errorf("%s: %d Namespace objects", source, seen["Namespace"])
	}
	if m.Namespace != nil {
		for kind, meta := range map[string]Meta{"Service": m.ServiceMeta, "DaemonSet": m.DaemonSetMeta} {
			if meta.Namespace != m.Namespace.Name {
				t.Errorf("%s: %s is in namespace %q, not in the manifest's namespace %q", source, kind, meta.Namespace, m.Namespace.Name)
			}
		}
	}
	return m
}

// Container is the DaemonSet's one container.
func (m Objects) Container(t testing.TB) Container {
	t.Helper()
	cs := m.DaemonSet.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%s: the DaemonSet has %d containers, want 1", m.Source, len(cs))
	}
	return cs[0]
}

// Volume is the pods' volume named name, or nil.
func (m Objects) Volume(name string) *Volume {
	for i, v := range m.DaemonSet.Template.Spec.Volumes {
		if v.Name == name {
			return &m.DaemonSet.Template.Spec.Volumes[i]
		}
	}
	return nil
}

// PortNamed is the container port named name (or name itself if it is a
// number).
func (c Container) PortNamed(t testing.TB, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	if n, err := strconv.Atoi(name); err == nil {
		return n
	}
	t.Fatalf("container %s has no port named %q", c.Name, name)
	return 0
}

// MountOf is where the container mounts volume, or "".
func (c Container) MountOf(volume string) string {
	for _, vm := range c.VolumeMounts {
		if vm.Name == volume {
			return vm.MountPath
		}
	}
	return ""
}

// EnvVar is the container's env entry called name, or nil.
func (c Container) EnvVar(name string) *EnvVar {
	for i, e := range c.Env {
		if e.Name == name {
			return &c.Env[i]
		}
	}
	return nil
}
