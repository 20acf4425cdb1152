//go:build !gobuild_test_tag

package main

const tagged = "without the tag"
