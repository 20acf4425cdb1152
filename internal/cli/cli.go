package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Exit statuses of Main.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed
	ExitUsage = 2 // the command line was wrong
)

// CLI is one run of the ephemera command line. The zero value of every
// field but Stdout and Stderr takes the documented default.
type CLI struct {
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment. Default os.LookupEnv.
	Getenv func(string) (string, bool)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Operator names the person running a break-glass revocation.
	// Default: the OS user (os/user.Current, then $USER).
	Operator func() (string, error)

	// secrets are removed from every message before it is printed
	// (passwords of the DSNs this run parsed).
	secrets []string
}

// Main runs the command line args (without the program name) and returns
// the process exit status: 0 on success, 1 when the command failed (one
// line "ephemera: ..." on stderr), 2 on a usage error (the command's usage
// and a hint on stderr).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &CLI{Stdout: stdout, Stderr: stderr}
	return c.Main(ctx, args)
}

// Main is the package-level Main for a configured CLI.
func (c *CLI) Main(ctx context.Context, args []string) int {
	err := c.Run(ctx, args)
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		c.printUsageError(ue)
		return ExitUsage
	}
	fmt.Fprintf(c.Stderr, "ephemera: %s\n", c.oneLine(err.Error()))
	return ExitError
}

// Run runs one command. A usage error is a *usageError.
func (c *CLI) Run(ctx context.Context, args []string) error {
	if c.Getenv == nil {
		c.Getenv = os.LookupEnv
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Operator == nil {
		c.Operator = osUser
	}
	if len(args) == 0 {
		return &usageError{msg: "no command given", hint: "Run 'ephemera help' for the list of commands."}
	}
	switch args[0] {
	case "help":
		return c.help(args[1:])
	case "-h", "-help", "--help":
		c.printMainUsage(c.Stdout)
		return nil
	case "-v", "-version", "--version":
		args = []string{"version"}
	}
	cmd, rest, err := c.lookup(args)
	if errors.Is(err, errHelpShown) {
		return nil
	} else if err != nil {
		return err
	}
	fs := flag.NewFlagSet("ephemera "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	run := cmd.setup(c, fs)
	if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
		c.printCommandHelp(c.Stdout, cmd, fs)
		return nil
	} else if err != nil {
		return &usageError{cmd: cmd, fs: fs, msg: flagError(err)}
	}
	if err := run(ctx, fs.Args()); err != nil {
		var ue *usageError
		if errors.As(err, &ue) && ue.cmd == nil {
			ue.cmd, ue.fs = cmd, fs
		}
		return err
	}
	return nil
}

var singleDashRE = regexp.MustCompile(`(^|\s)-([a-zA-Z][\w-]*)`)

// flagError rewords the flag package's errors with the "--flag" spelling
// the help uses.
func flagError(err error) string {
	msg := singleDashRE.ReplaceAllString(err.Error(), "${1}--${2}")
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return "unknown flag " + name
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return name + " needs a value"
	}
	return msg
}

// command is one subcommand. setup defines its flags on fs and returns the
// function that runs it with the remaining (positional) arguments.
type command struct {
	name     string // "leases", "broker serve"
	summary  string // one line, lower case
	synopsis string // after "ephemera <name> "
	help     string // paragraphs
	example  string // one or more command lines
	setup    func(c *CLI, fs *flag.FlagSet) func(ctx context.Context, args []string) error
}

// group is a command with subcommands ("broker serve").
type group struct {
	name    string
	summary string
}

var groups = []group{
	{"broker", "run the broker locally (subcommand: serve)"},
	{"reaper", "run the reaper on an interval (subcommand: run)"},
	{"policy", "check Cedar policies (subcommands: validate, test)"},
}

// commands in the order the main usage lists them.
func commands() []*command {
	return []*command{
		leasesCommand(), auditCommand(), revokeCommand(), reapCommand(),
		brokerServeCommand(), reaperRunCommand(),
		doctorCommand(),
		policyValidateCommand(), policyTestCommand(),
		localCommand(), localInvokeCommand(), localStartCommand(), versionCommand(),
	}
}

// lookup finds the command named by the first one or two args. A
// two-word name ("local invoke") wins over a one-word command that shares
// its first word ("local").
func (c *CLI) lookup(args []string) (*command, []string, error) {
	all := commands()
	if len(args) > 1 {
		for _, cmd := range all {
			if cmd.name == args[0]+" "+args[1] {
				return cmd, args[2:], nil
			}
		}
	}
	for _, cmd := range all {
		if cmd.name == args[0] {
			return cmd, args[1:], nil
		}
	}
	for _, g := range groups {
		if g.name != args[0] {
			continue
		}
		var subs []string
		for _, cmd := range all {
			if sub, ok := strings.CutPrefix(cmd.name, g.name+" "); ok {
				subs = append(subs, sub)
				if len(args) > 1 && args[1] == sub {
					return cmd, args[2:], nil
				}
			}
		}
		if len(args) > 1 && isHelpFlag(args[1]) {
			c.printGroupHelp(c.Stdout, g)
			return nil, nil, errHelpShown
		}
		msg := "missing subcommand"
		if len(args) > 1 {
			msg = fmt.Sprintf("unknown subcommand %q", args[1])
		}
		return nil, nil, &usageError{group: &g, msg: msg,
			hint: fmt.Sprintf("Subcommands: %s. Run 'ephemera help %s' for details.", strings.Join(subs, ", "), g.name)}
	}
	hint := "Run 'ephemera help' for the list of commands."
	if s := suggest(args[0]); s != "" {
		hint = fmt.Sprintf("Did you mean 'ephemera %s'? ", s) + hint
	}
	return nil, nil, &usageError{msg: fmt.Sprintf("unknown command %q", args[0]), hint: hint, showMain: true}
}

// errHelpShown ends a run that printed help on request.
var errHelpShown = errors.New("help shown")

func isHelpFlag(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

// help implements "ephemera help [command]".
func (c *CLI) help(args []string) error {
	if len(args) == 0 {
		c.printMainUsage(c.Stdout)
		return nil
	}
	name := strings.Join(args, " ")
	for _, cmd := range commands() {
		if cmd.name == name {
			fs := flag.NewFlagSet("ephemera "+cmd.name, flag.ContinueOnError)
			cmd.setup(c, fs)
			c.printCommandHelp(c.Stdout, cmd, fs)
			return nil
		}
	}
	for _, g := range groups {
		if g.name == name {
			c.printGroupHelp(c.Stdout, g)
			return nil
		}
	}
	hint := "Run 'ephemera help' for the list of commands."
	if s := suggest(name); s != "" {
		hint = fmt.Sprintf("Did you mean 'ephemera help %s'? ", s) + hint
	}
	return &usageError{msg: fmt.Sprintf("no help for unknown command %q", name), hint: hint}
}

// usageError is a wrong command line: Main prints it with the usage of the
// command it concerns and a hint, and exits 2.
type usageError struct {
	cmd      *command
	fs       *flag.FlagSet
	group    *group
	msg      string
	hint     string
	showMain bool
}

func (e *usageError) Error() string { return e.msg }

// usagef returns a usage error of the running command.
func usagef(hint, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), hint: hint}
}

func (c *CLI) printUsageError(e *usageError) {
	w := c.Stderr
	switch {
	case e.cmd != nil:
		fmt.Fprintf(w, "ephemera %s: %s\n\n", e.cmd.name, c.oneLine(e.msg))
		c.printCommandUsage(w, e.cmd, e.fs)
		hint := e.hint
		if hint == "" {
			hint = fmt.Sprintf("Run 'ephemera %s --help' for an example.", e.cmd.name)
		}
		fmt.Fprintf(w, "\n%s\n", hint)
	case e.group != nil:
		fmt.Fprintf(w, "ephemera %s: %s\n\n", e.group.name, c.oneLine(e.msg))
		c.printGroupHelp(w, *e.group)
		fmt.Fprintf(w, "\n%s\n", e.hint)
	default:
		fmt.Fprintf(w, "ephemera: %s\n", c.oneLine(e.msg))
		if e.showMain {
			fmt.Fprintln(w)
			c.printCommandList(w)
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, e.hint)
	}
}

const mainIntro = `ephemera is the operator CLI of the ephemera credential broker: AWS Lambda
functions get PostgreSQL users that exist only for minutes.

Usage:
  ephemera <command> [flags] [arguments]
`

const mainOutro = `Database commands connect with --url, default $EPHEMERA_DATABASE_URL: a
PostgreSQL URL for the broker's admin role on the target database. Broker
commands read the broker's environment: EPHEMERA_CONFIG, EPHEMERA_POLICY_DIR,
EPHEMERA_AUDIENCE, EPHEMERA_STS_ENDPOINT, EPHEMERA_STS_HOSTS,
EPHEMERA_DB_TIMEOUT, EPHEMERA_DB_POOL_SIZE, EPHEMERA_METRICS_NAMESPACE,
AWS_REGION.

Run 'ephemera help <command>' or 'ephemera <command> --help' for its flags
and an example.

Example:
  ephemera audit --database orders --at 2026-11-17T03:00:00Z
`

func (c *CLI) printMainUsage(w io.Writer) {
	fmt.Fprint(w, mainIntro+"\n")
	c.printCommandList(w)
	fmt.Fprintln(w)
	fmt.Fprint(w, mainOutro)
}

func (c *CLI) printCommandList(w io.Writer) {
	sections := []struct {
		title string
		names []string
	}{
		{"Incident response and audit (database):", []string{"leases", "audit", "revoke", "reap"}},
		{"Running the broker (broker configuration):", []string{"broker serve", "reaper run", "doctor"}},
		{"Policies (for CI):", []string{"policy validate", "policy test"}},
		{"On this machine (no AWS account):", []string{"local", "local invoke", "local start"}},
		{"Other:", []string{"version", "help"}},
	}
	byName := map[string]*command{}
	for _, cmd := range commands() {
		byName[cmd.name] = cmd
	}
	width := 0
	for _, s := range sections {
		for _, n := range s.names {
			width = max(width, len(n))
		}
	}
	for i, s := range sections {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, s.title)
		for _, n := range s.names {
			summary := "show help for a command"
			if cmd := byName[n]; cmd != nil {
				summary = cmd.summary
			}
			fmt.Fprintf(w, "  %-*s  %s\n", width, n, summary)
		}
	}
}

func (c *CLI) printGroupHelp(w io.Writer, g group) {
	fmt.Fprintf(w, "ephemera %s: %s\n\nSubcommands:\n", g.name, g.summary)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var example string
	for _, cmd := range commands() {
		if strings.HasPrefix(cmd.name, g.name+" ") {
			fmt.Fprintf(tw, "  ephemera %s\t%s\n", cmd.name, cmd.summary)
			if example == "" {
				example = cmd.example
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nExample:\n%s\n", indent(example))
}

// printCommandUsage prints the synopsis and the flags.
func (c *CLI) printCommandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage:\n  ephemera %s %s\n", cmd.name, cmd.synopsis)
	var n int
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if typ != "" {
			name += " " + strings.ToUpper(typ)
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", name, usage, def)
	})
	tw.Flush()
}

func (c *CLI) printCommandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "ephemera %s: %s\n\n", cmd.name, cmd.summary)
	c.printCommandUsage(w, cmd, fs)
	if cmd.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(cmd.help, "\n"))
	}
	fmt.Fprintf(w, "\nExample:\n%s\n", indent(cmd.example))
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

// suggest returns the command name closest to s, if it is close.
func suggest(s string) string {
	var names []string
	for _, cmd := range commands() {
		names = append(names, cmd.name)
	}
	for _, g := range groups {
		names = append(names, g.name)
	}
	slices.Sort(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// dsnRE matches the password of URL-form DSNs and key=value DSNs.
var (
	urlPasswordRE = regexp.MustCompile(`(?i)(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@`)
	kvPasswordRE  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
)

// redact removes passwords from a message: those of the DSNs this run
// parsed, and anything that looks like a DSN's password.
func (c *CLI) redact(s string) string {
	for _, sec := range c.secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "xxxxx")
		}
	}
	s = urlPasswordRE.ReplaceAllString(s, "${1}xxxxx@")
	return kvPasswordRE.ReplaceAllString(s, "${1}xxxxx")
}

// oneLine redacts s and folds it onto one line: lines ending in ":" run on,
// others are joined with "; ", and a line repeating the previous is dropped
// (pgx reports each connection attempt on its own line).
func (c *CLI) oneLine(s string) string {
	var b strings.Builder
	prev := ""
	for _, l := range strings.FieldsFunc(c.redact(s), func(r rune) bool { return r == '\n' || r == '\r' }) {
		l = strings.TrimSpace(l)
		if l == "" || l == prev {
			continue
		}
		if b.Len() > 0 {
			if strings.HasSuffix(prev, ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(l)
		prev = l
	}
	return b.String()
}

// osUser is the default CLI.Operator.
func osUser() (string, error) {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, nil
	}
	if name := os.Getenv("USER"); name != "" {
		return name, nil
	}
	return "", errors.New("cannot tell who you are (os/user and $USER both failed)")
}

// noArgs refuses positional arguments.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("", "unexpected argument %q", args[0])
	}
	return nil
}
