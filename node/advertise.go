package node

import (
	"net/url"
	"strings"

	ma "github.com/multiformats/go-multiaddr"
)

// routeTargets returns the hosts (names or IPs) of the --join targets: the
// libp2p host prefers to advertise the address its route to them leaves
// from (see p2p.ChooseAdvertiseAddr). Targets it cannot read are skipped.
func routeTargets(join []string) []string {
	var out []string
	for _, j := range join {
		if strings.HasPrefix(j, "http://") || strings.HasPrefix(j, "https://") {
			if u, err := url.Parse(j); err == nil && u.Hostname() != "" {
				out = append(out, u.Hostname())
			}
			continue
		}
		m, err := ma.NewMultiaddr(j)
		if err != nil {
			continue
		}
		for _, p := range []int{ma.P_IP4, ma.P_IP6, ma.P_DNS, ma.P_DNS4, ma.P_DNS6} {
			if v, err := m.ValueForProtocol(p); err == nil {
				out = append(out, v)
				break
			}
		}
	}
	return out
}
