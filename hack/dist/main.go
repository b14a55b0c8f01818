// Command dist builds mcnet's release artifacts into dist/: the kubectl-mcnet archives for
// krew, the krew manifest with their sha256, and the in-cluster components' OCI image.
// `make dist` runs it through hack/dist.sh; see internal/packaging for what it writes.
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
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}

func run() error {
	o := packaging.Options{Log: os.Stderr}
	flag.StringVar(&o.Root, "root", ".", "repository root")
	flag.StringVar(&o.OutDir, "out", "dist", "output directory")
	flag.StringVar(&o.Version, "version", os.Getenv("VERSION"), "version to stamp and release ($VERSION)")
	flag.StringVar(&o.Commit, "commit", os.Getenv("COMMIT"), "commit to stamp ($COMMIT)")
	flag.StringVar(&o.ImageRepository, "image-repository", os.Getenv("IMAGE_REPOSITORY"), "image repository ($IMAGE_REPOSITORY, default "+packaging.DefaultImageRepository+")")
	flag.StringVar(&o.ImageTag, "image-tag", os.Getenv("IMAGE_TAG"), "image tag ($IMAGE_TAG, default the version)")
	flag.BoolVar(&o.SkipImage, "skip-image", false, "do not build the image")
	flag.StringVar(&o.BaseLayout, "base-image-layout", os.Getenv("BASE_IMAGE_LAYOUT"), "OCI layout holding a base image per platform to use instead of mcnet's Debian base ($BASE_IMAGE_LAYOUT)")
	flag.StringVar(&o.CacheDir, "cache", "bin/debian", "cache of Debian packages, package lists and bases")
	flag.Parse()

	// SOURCE_DATE_EPOCH (reproducible-builds.org) sets the archives' mtimes; the default
	// is the Unix epoch, so the same sources always give the same bytes.
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
	res, err := packaging.Dist(ctx, o)
	if err != nil {
		return err
	}
	for _, p := range packaging.PluginPlatforms {
		if a, ok := res.Archives[p]; ok {
			fmt.Printf("%s  %s\n", a.Sha256, a.Path)
		}
	}
	fmt.Printf("%s  %s (krew manifest, version %s)\n", res.Manifest.Sha256, res.Manifest.Path, res.Version)
	if res.Image.Path != "" {
		fmt.Printf("%s  %s (image %s: %s; OCI layout in %s)\n", res.Image.Sha256, res.Image.Path,
			res.ImageRef, strings.Join(res.ImageBinaries, ", "), res.ImageLayout)
	}
	return nil
}
