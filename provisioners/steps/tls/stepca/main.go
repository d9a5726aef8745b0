// Command step-ca: the smallstep online CA, built from Debian's
// golang-github-smallstep-certificates-dev sources, which ship the library
// (github.com/smallstep/certificates) but no cmd/step-ca main package.
//
// Built by provisioners/tls.py (StepCaBinary) in GOPATH mode, offline:
//
//	CGO_ENABLED=0 GO111MODULE=off GOPROXY=off \
//	GOPATH=$WORK:/usr/share/gocode go build -ldflags "-s -w -X main.Version=..." -o step-ca .
//
// Usage is upstream's: `step-ca [--password-file FILE] ca.json` starts the CA,
// `step-ca version` prints the version. Only the file-based KMS and CAS
// backends are linked in; that is all a CA with keys on disk needs.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
	"go.step.sm/cli-utils/step"

	_ "github.com/smallstep/certificates/cas/softcas"
	_ "github.com/smallstep/certificates/kms/softkms"
)

// Version and BuildTime are set with -ldflags "-X main.Version=...".
var (
	Version   = "unknown"
	BuildTime = "N/A"
)

func versionAction(_ *cli.Context) error {
	fmt.Println(step.Version())
	fmt.Println("Release Date:", step.ReleaseDate())
	return nil
}

// startAction runs upstream's `start` command as the top-level action: the
// command re-parses the process arguments (minus argv[0]) with its own flags.
func startAction(app *cli.App) cli.ActionFunc {
	return func(_ *cli.Context) error {
		set := flag.NewFlagSet(app.Name, flag.ContinueOnError)
		if err := set.Parse(os.Args); err != nil {
			return err
		}
		return commands.AppCommand.Run(cli.NewContext(app, set, nil))
	}
}

func main() {
	step.Set("Smallstep CA", Version, BuildTime)

	app := cli.NewApp()
	app.Name = "step-ca"
	app.HelpName = "step-ca"
	app.Usage = "an online certificate authority (phoenix build)"
	app.Version = step.Version()
	app.Writer = os.Stdout
	app.ErrWriter = os.Stderr
	app.Flags = append(append([]cli.Flag{}, commands.AppCommand.Flags...), cli.HelpFlag)
	app.Commands = []cli.Command{{Name: "version", Usage: "print the version", Action: versionAction}}
	app.Action = startAction(app)

	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
