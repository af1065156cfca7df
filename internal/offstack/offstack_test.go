package offstack

import (
	"errors"
	"testing"
)

func TestDo(t *testing.T) {
	v, err := Do(func() (int, error) { return 7, nil })
	if v != 7 || err != nil {
		t.Fatalf("Do = %d, %v", v, err)
	}
	want := errors.New("boom")
	if _, err := Do(func() (string, error) { return "", want }); err != want {
		t.Fatalf("Do's error = %v", err)
	}
}

func deep(n int) int {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deep(n-1) + int(pad[n%256])
}

// BenchmarkDo is the cost of a call, stack growth of the deep work aside.
func BenchmarkDo(b *testing.B) {
	for range b.N {
		Do(func() (int, error) { return deep(4), nil })
	}
}
