// Command image builds mcnet's images for this machine's platform into bin/images/ (`make
// image`): the component image on its Debian base, the network-tools image under its
// aliases and the pause image, each as an OCI layout and a tar for `ctr images import`.
// See internal/packaging.BuildImages and docs/images.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/mcnet-io/mcnet/internal/packaging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run() error {
	o := packaging.ImagesOptions{Log: os.Stderr}
	flag.StringVar(&o.Root, "root", ".", "repository root")
	flag.StringVar(&o.OutDir, "out", "bin/images", "output directory")
	flag.StringVar(&o.CacheDir, "cache", "bin/debian", "cache of Debian packages and bases")
	flag.StringVar(&o.Version, "version", os.Getenv("VERSION"), "version to stamp ($VERSION)")
	flag.StringVar(&o.Commit, "commit", os.Getenv("COMMIT"), "commit to stamp ($COMMIT)")
	flag.StringVar(&o.ImageRepository, "image-repository", os.Getenv("IMAGE_REPOSITORY"), "repository of the component image ($IMAGE_REPOSITORY, default "+packaging.DefaultImageRepository+")")
	flag.StringVar(&o.ImageTag, "image-tag", os.Getenv("IMAGE_TAG"), "tag of mcnet's images ($IMAGE_TAG, default the version)")
	flag.Parse()
	o.Epoch = time.Unix(0, 0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
		}
		o.Epoch = time.Unix(sec, 0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	images, err := packaging.BuildImages(ctx, o)
	if err != nil {
		return err
	}
	for _, img := range images {
		fmt.Printf("%-12s %s  %6.1f MB  %s  (%s)\n", img.Name, img.Digest, float64(img.Size)/1e6, strings.Join(img.Refs, " "), img.Archive)
	}
	fmt.Fprintf(os.Stderr, "image: done in %s\n", time.Since(start).Round(time.Second/10))
	return nil
}
