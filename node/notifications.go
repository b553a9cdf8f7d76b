package node

import (
	"log/slog"
	"path/filepath"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node/notify"
)

// openNotifier opens the webhooks of cfg.Notifications ("" : none), with
// their queues in <DataDir>/notifications/<endpoint>/. instanceID is the
// node's peer id.
func openNotifier(cfg Config, instanceID string, log *slog.Logger) (*notify.Notifier, error) {
	if cfg.Notifications == "" {
		return nil, nil
	}
	return notify.Open(cfg.Notifications, filepath.Join(cfg.DataDir, "notifications"), instanceID, log.With("component", "notify"))
}

// Notifier is what the API tells about each push, delete and pull this
// node served (nil without --notifications).
func (n *Node) Notifier() api.Notifier {
	if n.notify == nil {
		return nil
	}
	return n.notify
}

// notifications is the loop that delivers the webhooks.
func (n *Node) notifications() loop {
	if n.notify == nil {
		return idleLoop{}
	}
	return n.notify
}

// notificationStatus is the status document's notifications section.
func (n *Node) notificationStatus() *notify.Status {
	if n.notify == nil {
		return nil
	}
	s := n.notify.Status()
	return &s
}
