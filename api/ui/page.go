// Package ui renders a node's status page (/_meshreg/ui/): one HTML
// document with inline CSS and no script, built from the node's status
// document (the JSON of /_meshreg/v1/status) and a page of repositories.
// It does no I/O of its own: package api gathers the data and calls
// Render.
package ui

import (
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/meshreg/meshreg/internal/bytesize"
)

//go:embed page.html
var files embed.FS

// ContentSecurityPolicy is the header the page is served with: nothing is
// loaded from anywhere (no script, image, font or frame), the inline
// <style> element is the only style.
const ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// AliveWithin is how recent a member's last libp2p contact must be for the
// page to call it alive (the node checks its connections every second).
const AliveWithin = 10 * time.Second

// Status is the part of the node's status document the page shows,
// decoded from its JSON, so the page reads the same document as
// /_meshreg/v1/status and fields the page does not know are ignored.
type Status struct {
	NodeID  string `json:"node_id"`
	Version string `json:"version"`
	Build   struct {
		Commit   string `json:"commit"`
		Date     string `json:"date"`
		Platform string `json:"platform"`
	} `json:"build"`
	Uptime   string `json:"uptime"`
	Region   string `json:"region"`
	Zone     string `json:"zone"`
	Replicas int    `json:"replicas"`
	Uploads  int    `json:"uploads_in_progress"`
	DHTPeers int    `json:"dht_peers"`
	Removed  bool   `json:"removed"`
	// Role is "leader", "voter", "non-voter" or "follower" (a follower of
	// the metadata, not a Raft member: Follower says whom it tails).
	Role     string `json:"role"`
	Follower *struct {
		Source string `json:"source"`
		Lag    uint64 `json:"lag"`
	} `json:"follower"`
	Join *struct {
		Waiting   string `json:"waiting"`
		LastError string `json:"last_error"`
	} `json:"join"`
	Blobs struct {
		Count           int64 `json:"count"`
		Bytes           int64 `json:"bytes"`
		Fetching        int   `json:"fetching"`
		UnderReplicated int64 `json:"under_replicated"`
		Corrupt         int64 `json:"corrupt"`
		Quarantined     int64 `json:"quarantined"`
	} `json:"blobs"`
	Raft struct {
		State        string `json:"state"`
		LeaderID     string `json:"leader_id"`
		Term         uint64 `json:"term"`
		CommitIndex  uint64 `json:"commit_index"`
		AppliedIndex uint64 `json:"applied_index"`
		Members      []struct {
			ID       string `json:"id"`
			Address  string `json:"address"`
			Suffrage string `json:"suffrage"`
		} `json:"members"`
		StorageError string `json:"storage_error"`
	} `json:"raft"`
	Peers []struct {
		ID     string `json:"id"`
		Region string `json:"region"`
		Zone   string `json:"zone"`
	} `json:"peers"`
	MemberLastContact map[string]time.Time `json:"member_last_contact"`
	Disk              struct {
		FreeBytes    int64  `json:"free_bytes"`
		TotalBytes   int64  `json:"total_bytes"`
		ReserveBytes int64  `json:"reserve_bytes"`
		Low          bool   `json:"low"`
		Error        string `json:"error"`
		// The disk budget (--max-disk; 0: none): blob bytes held against
		// it, the low-water mark eviction goes down to, and why new blobs
		// are refused ("": they are not).
		BudgetBytes   int64  `json:"budget_bytes"`
		LowWaterBytes int64  `json:"low_water_bytes"`
		UsedBytes     int64  `json:"used_bytes"`
		OverBudget    string `json:"over_budget"`
	} `json:"disk"`
	Upstreams []Upstream `json:"upstreams"`
}

// Upstream is a registry the node mirrors, as the status reports it.
type Upstream struct {
	Name        string    `json:"name"`
	URL         string    `json:"url"`
	LastSuccess time.Time `json:"last_success"`
	LastError   string    `json:"last_error"`
	LastErrorAt time.Time `json:"last_error_at"`
}

// DecodeStatus reads the status document's JSON.
func DecodeStatus(doc []byte) (Status, error) {
	var s Status
	if err := json.Unmarshal(doc, &s); err != nil {
		return Status{}, fmt.Errorf("ui: decoding the node's status document: %w", err)
	}
	return s, nil
}

// Repo is one repository of the listing, with its first tags.
type Repo struct {
	Name string
	Tags []Tag
	// MoreTags is true when the repository has more tags than listed.
	MoreTags bool
	// Error says why the tags could not be listed ("" when they were).
	Error string
}

// Tag is one tag and what it points at.
type Tag struct {
	Name   string
	Digest string
	// Kind is "image", "index (N manifests)" or the media type.
	Kind string
	// Size is the bytes of the manifest and the distinct blobs it (or
	// the manifests of an index) names; -1 when it was not computed.
	Size int64
	// Error says why the tag could not be read ("" when it was).
	Error string
}

// Page is everything the page shows.
type Page struct {
	Now    time.Time
	Status Status
	// StatusError is set when the status could not be read; the
	// sections made from it are then left out.
	StatusError string
	// Viewer is who asks ("" with authentication off).
	Viewer string
	// Filtered is true when the repositories are those Viewer may pull.
	Filtered bool
	Repos    []Repo
	// ReposError says why the repositories could not be listed.
	ReposError string
	// Next is the link (a query, "?last=…") to the next page of
	// repositories ("" on the last page), FirstPage the one to the first;
	// First is true on the first page. Build them with url.Values.Encode.
	Next, FirstPage template.URL
	First           bool
	// SizesCut is true when sizes were left out to bound the page's cost.
	SizesCut bool
	// Refresh is the seconds between reloads, 0 for none.
	Refresh int
	// RefreshToggle is the link (a query) that turns reloading off (or
	// on).
	RefreshToggle template.URL
}

// Member is a Raft member as the page shows it.
type Member struct {
	ID, Address, Suffrage string
	Region, Zone          string
	Leader, Self          bool
	// Health is "alive", "dead" or "unknown" (no contact recorded).
	Health      string
	LastContact string // "3s ago", "" when unknown
}

// ZoneGroup is the members of one zone.
type ZoneGroup struct {
	Name    string
	Members []Member
}

// RegionGroup is the zones of one region.
type RegionGroup struct {
	Name  string
	Zones []ZoneGroup
}

// Members groups the Raft members by region and zone (unlabelled ones
// under "(none)"), in name order, each with its health as this node sees
// it.
func (p Page) Members() []RegionGroup {
	s := p.Status
	labels := map[string][2]string{s.NodeID: {s.Region, s.Zone}}
	for _, pe := range s.Peers {
		if pe.ID != s.NodeID {
			labels[pe.ID] = [2]string{pe.Region, pe.Zone}
		}
	}
	var ms []Member
	for _, m := range s.Raft.Members {
		l := labels[m.ID]
		mm := Member{ID: m.ID, Address: m.Address, Suffrage: strings.ToLower(m.Suffrage),
			Region: cmp.Or(l[0], "(none)"), Zone: cmp.Or(l[1], "(none)"),
			Leader: m.ID == s.Raft.LeaderID, Self: m.ID == s.NodeID, Health: "unknown"}
		switch last, ok := s.MemberLastContact[m.ID]; {
		case mm.Self:
			mm.Health = "alive"
		case ok && !last.IsZero():
			ago := p.Now.Sub(last)
			mm.LastContact = ago.Round(time.Second).String() + " ago"
			mm.Health = "dead"
			if ago < AliveWithin {
				mm.Health = "alive"
			}
		}
		ms = append(ms, mm)
	}
	slices.SortFunc(ms, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.ID, b.ID))
	})
	var out []RegionGroup
	for _, m := range ms {
		if len(out) == 0 || out[len(out)-1].Name != m.Region {
			out = append(out, RegionGroup{Name: m.Region})
		}
		r := &out[len(out)-1]
		if len(r.Zones) == 0 || r.Zones[len(r.Zones)-1].Name != m.Zone {
			r.Zones = append(r.Zones, ZoneGroup{Name: m.Zone})
		}
		z := &r.Zones[len(r.Zones)-1]
		z.Members = append(z.Members, m)
	}
	return out
}

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"size": bytesize.Human,
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	},
	"pct": func(part, whole int64) string {
		if whole <= 0 {
			return "?"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(whole))
	},
	"short": func(s string) string {
		if len(s) > 19 {
			return s[:19] + "…"
		}
		return s
	},
}).ParseFS(files, "page.html"))

// Render writes the page.
func Render(w io.Writer, p Page) error {
	if err := page.Execute(w, p); err != nil {
		return fmt.Errorf("ui: rendering the status page: %w", err)
	}
	return nil
}
