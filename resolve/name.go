package resolve

import "path/filepath"

// Abs is s made absolute, for a process whose working directory is not
// the caller's (warm serve): names (IsName) are returned as they are,
// anything else is a path, even with a ':' in it ("x:y.safetensors"),
// made absolute against this process's working directory. "" names
// nothing, and stays "" (not the working directory).
func Abs(s string) (string, error) {
	if s == "" || IsName(s) {
		return s, nil
	}
	return filepath.Abs(s)
}
