package resolve

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAbs(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"":                     "",
		"hf:org/name":          "hf:org/name",
		"ollama:llama3:8b":     "ollama:llama3:8b",
		"x:y.safetensors":      filepath.Join(wd, "x:y.safetensors"),
		"c:/models/m.gguf":     filepath.Join(wd, "c:/models/m.gguf"),
		"/abs/m.safetensors":   "/abs/m.safetensors",
		"sub/../m.safetensors": filepath.Join(wd, "m.safetensors"),
	} {
		got, err := Abs(in)
		if err != nil || got != want {
			t.Errorf("Abs(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
