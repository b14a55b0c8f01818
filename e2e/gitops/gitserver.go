package gitops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GitServer serves bare repositories under a directory over smart HTTP on loopback,
// through `git http-backend` (the CGI program Git ships for exactly this), clone and
// push alike. No authentication: it listens on 127.0.0.1 only.
type GitServer struct {
	// URL is the server's base URL; a repository NAME is at URL/NAME.git.
	URL  string
	root string
	srv  *http.Server
}

// StartGitServer serves the repositories under root (created if needed) until Close.
func StartGitServer(root string) (*GitServer, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	s := &GitServer{URL: "http://" + ln.Addr().String(), root: root, srv: &http.Server{Handler: h}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops serving.
func (s *GitServer) Close() error { return s.srv.Close() }

// CreateRepo makes an empty bare repository NAME.git whose default branch is branch and
// that accepts pushes over HTTP; it returns its URL.
func (s *GitServer) CreateRepo(ctx context.Context, name, branch string) (string, error) {
	dir := filepath.Join(s.root, name+".git")
	if err := Git(ctx, "", "init", "--quiet", "--bare", "--initial-branch="+branch, dir); err != nil {
		return "", err
	}
	// http-backend refuses anonymous pushes unless told otherwise.
	if err := Git(ctx, dir, "config", "http.receivepack", "true"); err != nil {
		return "", err
	}
	return s.URL + "/" + name + ".git", nil
}

// Git runs git in dir with a fixed identity and no user or system configuration.
func Git(ctx context.Context, dir string, args ...string) error {
	_, err := GitOutput(ctx, dir, args...)
	return err
}

// GitOutput is Git returning standard output.
func GitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=mcnet e2e", "GIT_AUTHOR_EMAIL=e2e@mcnet.invalid",
		"GIT_COMMITTER_NAME=mcnet e2e", "GIT_COMMITTER_EMAIL=e2e@mcnet.invalid",
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// CommitAndPush commits everything in the working tree dir (making it a repository
// tracking remote's branch on first use) and pushes it; it returns the commit's hash.
// Nothing to commit is an error: callers push changes.
func CommitAndPush(ctx context.Context, dir, remote, branch, message string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, ".git")); errors.Is(err, os.ErrNotExist) {
		if err := Git(ctx, dir, "init", "--quiet", "--initial-branch="+branch); err != nil {
			return "", err
		}
		if err := Git(ctx, dir, "remote", "add", "origin", remote); err != nil {
			return "", err
		}
	}
	if err := Git(ctx, dir, "add", "--all"); err != nil {
		return "", err
	}
	if err := Git(ctx, dir, "commit", "--quiet", "-m", message); err != nil {
		return "", err
	}
	if err := Git(ctx, dir, "push", "--quiet", "origin", "HEAD:refs/heads/"+branch); err != nil {
		return "", err
	}
	return GitOutput(ctx, dir, "rev-parse", "HEAD")
}
