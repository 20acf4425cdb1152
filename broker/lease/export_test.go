package lease

import "context"

// SetBeforeLeaseInsert installs the test hook that runs inside the issue
// transaction after the role exists and before the lease row is written.
func (s *Store) SetBeforeLeaseInsert(f func(ctx context.Context) error) { s.beforeLeaseInsert = f }
