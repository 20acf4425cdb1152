// Command hello is a tiny main package the layer tests zip, so that the
// zipper is tested even without the extension.
package main

import "os"

func main() { os.Stdout.WriteString("hello\n") }
