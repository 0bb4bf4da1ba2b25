/* Runs a libFuzzer target over every file of its seed corpus without libFuzzer, so the gcc build of the
 * suite keeps each target compiling and exercised (the real fuzzing needs clang: see tests/CMakeLists). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	int n = 0;
	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		if (!d) {
			fprintf(stderr, "replay: cannot open %s\n", argv[i]);
			return 1;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
			FILE *f = fopen(path, "rb");
			if (!f)
				continue;
			uint8_t *buf = malloc(1 << 20);
			size_t len = buf ? fread(buf, 1, 1 << 20, f) : 0;
			fclose(f);
			/* an exact-size copy so the sanitizers see any over-read */
			uint8_t *exact = malloc(len ? len : 1);
			if (buf && exact) {
				memcpy(exact, buf, len);
				LLVMFuzzerTestOneInput(exact, len);
				n++;
			}
			free(exact);
			free(buf);
		}
		closedir(d);
	}
	printf("replay: %d inputs, no crash\n", n);
	return n > 0 ? 0 : 1;
}
