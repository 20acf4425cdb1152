// Command hello prints which build tags it was built with: gobuild's tests
// build it.
package main

import "fmt"

func main() { fmt.Println("hello " + tagged) }
