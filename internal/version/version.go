// Package version holds the build version, set by the linker at release time.
package version

// Version is overridden with -ldflags "-X …/internal/version.Version=v1.2.3".
var Version = "dev"
