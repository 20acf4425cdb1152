package trace

import (
	"context"
	"testing"
)

func BenchmarkStartEndNoSegment(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, end := Start(ctx, "step")
		end(nil)
	}
}

func BenchmarkStartEndWithSegment(b *testing.B) {
	testDaemon.keep.Store(false)
	defer testDaemon.keep.Store(true)
	ctx, endRoot := BeginSegment(context.Background(), "bench")
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		_, end := Start(ctx, "step")
		end(nil)
		// Keep the root segment from growing without bound: it holds every
		// closed subsegment until it is sent.
		if n++; n%1000 == 0 {
			b.StopTimer()
			endRoot(nil)
			ctx, endRoot = BeginSegment(context.Background(), "bench")
			b.StartTimer()
		}
	}
	endRoot(nil)
}
