// Package runtimes holds the end-to-end tests of ephemera from the two most used Lambda
// runtimes: functions/demo-python (psycopg 3 and boto3, with the helper ephemera.py) and
// functions/demo-node (pg and AWS SDK v3, with the helper ephemera.js), each run by its real
// interpreter under sam/local/lambdaemu next to the real extension, against the local system
// of sam/local/stack (PostgreSQL, the STS emulator, the broker and its reaper), with an AWS
// profile whose role the broker assumes for the function.
//
// They prove, for each runtime: the function reads a credential and queries the orders; the
// AWS call its helper-built SDK client makes reaches STS signed by the profile's assumed role,
// never by the execution role; its queries keep succeeding across rotations, across freezes of
// the sandbox longer than the credential's TTL, and when the database ends its session; and
// no password, secret key or session token reaches any log.
//
// The interpreters must be installed; the tests never skip. Python is Debian's
// /usr/bin/python3 with python3-psycopg and python3-boto3 (apt-get install -y python3-psycopg
// python3-boto3); Node is node 20+ with functions/demo-node/node_modules (npm ci in that
// folder). .ci/run installs both. The package's only code, PythonMissing and NodeMissing,
// says what is missing; tests/local uses it too.
package runtimes
