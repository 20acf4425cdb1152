// Package local holds the end-to-end tests of `ephemera local invoke` and `ephemera local
// start`: the CLI, run in-process, starts the local stack (PostgreSQL, the STS emulator,
// the broker and its reaper), builds the extension, and runs functions/demo-python and
// functions/demo-node under the Lambda emulator with the environment and event files
// committed in their local/ folders, exactly as the README tells a newcomer to.
//
// The interpreters must be installed; the tests never skip. Python is Debian's
// /usr/bin/python3 with python3-psycopg and python3-boto3; Node is node 20+ with
// functions/demo-node/node_modules (npm ci in that folder). .ci/run installs both.
// The package has no code of its own.
package local
