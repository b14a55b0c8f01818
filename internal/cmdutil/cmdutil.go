// Package cmdutil holds what every kubectl-mcnet verb shares: exit codes and the error
// that carries one.
package cmdutil

// Exit codes of kubectl-mcnet.
const (
	// ExitOK means all good.
	ExitOK = 0
	// ExitFindings means the command ran and found problems (e.g. diagnose checks failed).
	ExitFindings = 1
	// ExitUsage means bad usage or input, or no connection to a cluster.
	ExitUsage = 2
)

// ExitError is an error with the exit code the process should end with.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ExitError) Unwrap() error { return e.Err }

// Usage wraps err as bad usage or input (exit code 2).
func Usage(err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: ExitUsage, Err: err}
}

// Failure wraps err as a failure of the command itself (exit code 1).
func Failure(err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: ExitFindings, Err: err}
}
