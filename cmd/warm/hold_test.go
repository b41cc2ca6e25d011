package main

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/modelcache/modelcache/l2"
)

// TestHelperHoldDir is not a test: TestWarm_DirectoryInUse runs it in a child
// process to hold a cache directory open until killed.
func TestHelperHoldDir(t *testing.T) {
	dir := os.Getenv("WARM_HOLD_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, err := l2.Open(&l2.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Println("held")
	for {
		time.Sleep(time.Hour)
	}
}
