//go:build gobuild_test_tag

package main

const tagged = "with the tag"
