package vlessclient

import "time"

// SetNow replaces the clock the pool's idle check reads.
func SetNow(c *Client, now func() time.Time) { c.now = now }
