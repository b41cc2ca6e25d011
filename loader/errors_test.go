package loader

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// Every sentinel the docs promise survives the wrapping on its way out: a
// GGUF v1 file is both an invalid model and unsupported.
func TestErrors_SentinelsSurviveWrapping(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p
	}
	gguf1 := binary.LittleEndian.AppendUint32([]byte("GGUF"), 1)
	gguf1 = append(gguf1, make([]byte, 16)...)
	npy9 := append([]byte("\x93NUMPY\x09\x00"), 0, 0)
	cases := []struct {
		path string
		want []error
	}{
		{write("v1.gguf", gguf1), []error{errs.ErrInvalidModel, errs.ErrUnsupported}},
		{write("v9.npy", npy9), []error{errs.ErrInvalidModel, errs.ErrUnsupported}},
		{write("short.safetensors", []byte("abc")), []error{errs.ErrInvalidModel}},
		{filepath.Join(dir, "missing.safetensors"), []error{os.ErrNotExist}},
	}
	for _, c := range cases {
		_, err := Open(c.path)
		require.Error(t, err, c.path)
		for _, want := range c.want {
			require.True(t, errors.Is(err, want), "%s: %v is not %v", c.path, err, want)
		}
		require.ErrorContains(t, err, c.path)
	}
	f, err := Open("../testdata/models/posenet.bf16.safetensors")
	require.NoError(t, err)
	defer f.Close()
	_, err = f.ReadTensor("no-such-tensor")
	require.ErrorIs(t, err, errs.ErrNotFound)
}

// A git-lfs pointer, a saved web page or an object store's XML error in
// place of a model is named as such, not as a header of absurd length.
func TestOpen_NamesStandInsForModels(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n": "git lfs pull",
		"\n<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>":                                                                   "an HTML page",
		"<html><body>404</body></html>":                                   "an HTML page",
		"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>": "an XML document",
	}
	for content, want := range cases {
		for _, ext := range []string{".safetensors", ".gguf", ".npy", ".npz"} {
			p := filepath.Join(dir, "m"+ext)
			require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
			_, err := Open(p)
			require.ErrorIs(t, err, errs.ErrInvalidModel)
			require.ErrorContains(t, err, want, "%s: %s", ext, strings.SplitN(content, "\n", 2)[0])
			require.NotContains(t, err.Error(), "header length")
		}
	}
}
