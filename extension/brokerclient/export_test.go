package brokerclient

import (
	"context"
	"time"
)

// SetSleep replaces the backoff wait, so tests can record delays without waiting.
func (c *Client) SetSleep(f func(ctx context.Context, d time.Duration) error) { c.sleep = f }

// Backoff exposes the backoff computation.
func (c *Client) Backoff(attempt int) time.Duration { return c.backoff(attempt) }
