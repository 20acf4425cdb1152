// Package docs tests the shell snippets of the repository's READMEs, so that
// what a newcomer copies from them works, or says what it needs.
//
// Every fenced block whose language is a shell (sh, bash, shell, zsh,
// console) in README.md, layer/README.md, sam/README.md and
// functions/*/README.md must name, after the language, exactly one of:
//
//	```sh run    run by this package from the repository root, offline,
//	             with the ephemera CLI (built once) first on PATH; must exit 0
//	```sh aws    needs an AWS account and credentials (or Docker and the SAM CLI)
//	```sh db     needs a database prepared for ephemera and its admin URL
//	```sh make   a make target of this repository (CI runs them)
//	```sh net    needs the internet (e.g. the Go module proxy)
//
// A shell block without one of these fails TestShellSnippetsAreMarked.
// TestRunSnippets runs the "run" blocks with bash -euo pipefail; every
// Cedar block of those files is validated with 'ephemera policy validate'
// (TestCedarSnippetsValidate); no document refers to texts outside the
// repository (TestNoOutsideReferences); and every relative link names a
// file of the repository (TestLinksResolve). Blocks in other languages (go,
// python, yaml, json, sql, http, text) are illustrations and are not run.
//
// Run them with
//
//	go test ./tests/docs/ -count=1
package docs
