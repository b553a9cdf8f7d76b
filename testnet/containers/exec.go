package containers

import (
	"context"
	"fmt"
)

// Exec runs a command inside the running container (docker exec) and
// returns its trimmed stdout.
func (c *Container) Exec(ctx context.Context, args ...string) (string, error) {
	out, err := c.d.run(ctx, append([]string{"exec", c.ID}, args...)...)
	if err != nil {
		return out, fmt.Errorf("containers: exec in %s: %w", c.Name, err)
	}
	return out, nil
}
