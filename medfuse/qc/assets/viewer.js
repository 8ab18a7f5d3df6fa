/* medfuse QC viewer: axial, coronal and sagittal planes of a case, an MRI/PET blend and a crosshair.
 *
 * The volumes are in the page (JSON in #viewer-data: gzip + base64 arrays, unpacked with the
 * browser's DecompressionStream), so nothing is fetched. The QC grid's axes point to the patient's
 * left (x), posterior (y) and superior (z), so every plane is a plain slice of the arrays, shown in
 * the radiological convention (patient's right on the viewer's left), with square pixels (isotropic
 * voxels). index_to_lps turns a voxel into LPS millimetres; mri_lps_to_index gives the MRI's voxel.
 */
(function () {
  "use strict";
  const root = document.getElementById("viewer");
  const source = document.getElementById("viewer-data");
  if (!root || !source) {
    return;
  }
  const status = document.getElementById("viewer-status");
  const data = JSON.parse(source.textContent);
  const size = [data.shape[2], data.shape[1], data.shape[0]]; // voxels along x, y, z
  const stride = [1, size[0], size[0] * size[1]];
  const point = data.start.slice(); // crosshair voxel (x, y, z)
  // fixed: the axis a view slices; col, row: the axes across and down; flip: row 0 is the axis's last voxel
  const VIEWS = {
    axial: { fixed: 2, col: 0, row: 1, flip: false, letters: ["A", "P", "R", "L"] },
    coronal: { fixed: 1, col: 0, row: 2, flip: true, letters: ["S", "I", "R", "L"] },
    sagittal: { fixed: 0, col: 1, row: 2, flip: true, letters: ["S", "I", "A", "P"] },
  };
  const AXIS_NAMES = ["x", "y", "z"];
  let base = null;
  let pet = null;
  let lut = null;
  let petColour = null; // LUT index of every stored PET level
  let opacity = 0.5;

  function fail(message) {
    root.dataset.state = "failed";
    status.textContent = message;
  }

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  function format(value) {
    return String(parseFloat(value.toPrecision(4)));
  }

  function apply(matrix, vector) {
    return matrix.slice(0, 3).map((row) => row[0] * vector[0] + row[1] * vector[1] + row[2] * vector[2] + row[3]);
  }

  async function inflate(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  function petValue(index) {
    return data.pet_offset + data.pet_scale * pet[index];
  }

  function prepareColours() {
    const low = data.pet_window[0];
    const span = data.pet_window[1] - data.pet_window[0];
    petColour = new Uint8Array(65536); // every uint16 level (the page stores 12-bit ones)
    for (let q = 0; q < 65536; q++) {
      const t = (data.pet_offset + data.pet_scale * q - low) / span;
      petColour[q] = Math.round(clamp(t, 0, 1) * 255);
    }
  }

  function setUpView(name) {
    const view = VIEWS[name];
    view.canvas = document.getElementById("view-" + name);
    view.slider = document.getElementById("slice-" + name);
    view.output = document.getElementById("slice-" + name + "-value");
    view.width = size[view.col];
    view.height = size[view.row];
    const scale = Math.max(1, Math.round(480 / Math.max(size[0], size[1], size[2])));
    view.canvas.width = view.width * scale;
    view.canvas.height = view.height * scale;
    view.context = view.canvas.getContext("2d");
    view.plane = document.createElement("canvas");
    view.plane.width = view.width;
    view.plane.height = view.height;
    view.planeContext = view.plane.getContext("2d");
    view.pixels = view.planeContext.createImageData(view.width, view.height);
    view.slider.max = String(size[view.fixed] - 1);

    function pick(event) {
      const box = view.canvas.getBoundingClientRect();
      const column = Math.floor(((event.clientX - box.left) / box.width) * view.width);
      const row = Math.floor(((event.clientY - box.top) / box.height) * view.height);
      point[view.col] = clamp(column, 0, view.width - 1);
      point[view.row] = clamp(view.flip ? view.height - 1 - row : row, 0, view.height - 1);
      update();
    }
    view.canvas.addEventListener("pointerdown", (event) => {
      view.canvas.setPointerCapture(event.pointerId);
      pick(event);
    });
    view.canvas.addEventListener("pointermove", (event) => {
      if (event.buttons & 1) {
        pick(event);
      }
    });
    view.canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        move(view, event.deltaY < 0 ? 1 : -1);
      },
      { passive: false },
    );
    view.canvas.addEventListener("keydown", (event) => {
      const steps = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
      if (event.key in steps) {
        move(view, steps[event.key]);
      } else if (event.key === "Home" || event.key === "End") {
        point[view.fixed] = event.key === "Home" ? 0 : size[view.fixed] - 1;
        update();
      } else {
        return;
      }
      event.preventDefault();
    });
    view.slider.addEventListener("input", () => {
      point[view.fixed] = Number(view.slider.value);
      update();
    });
  }

  function move(view, step) {
    point[view.fixed] = clamp(point[view.fixed] + step, 0, size[view.fixed] - 1);
    update();
  }

  function drawPlane(view) {
    const pixels = view.pixels.data;
    const fixedOffset = point[view.fixed] * stride[view.fixed];
    const step = stride[view.col];
    const alpha = pet ? opacity : 0;
    let out = 0;
    for (let r = 0; r < view.height; r++) {
      const row = view.flip ? view.height - 1 - r : r;
      let index = fixedOffset + row * stride[view.row];
      for (let c = 0; c < view.width; c++, index += step, out += 4) {
        const grey = base[index];
        if (alpha > 0) {
          const k = petColour[pet[index]] * 3;
          pixels[out] = grey + alpha * (lut[k] - grey);
          pixels[out + 1] = grey + alpha * (lut[k + 1] - grey);
          pixels[out + 2] = grey + alpha * (lut[k + 2] - grey);
        } else {
          pixels[out] = pixels[out + 1] = pixels[out + 2] = grey;
        }
        pixels[out + 3] = 255;
      }
    }
    view.planeContext.putImageData(view.pixels, 0, 0);
    const context = view.context;
    const canvas = view.canvas;
    context.imageSmoothingEnabled = true;
    context.drawImage(view.plane, 0, 0, canvas.width, canvas.height);
    drawCrosshair(view);
    drawLetters(view);
  }

  function drawCrosshair(view) {
    const context = view.context;
    const scale = view.canvas.width / view.width;
    const x = (point[view.col] + 0.5) * scale;
    const y = ((view.flip ? view.height - 1 - point[view.row] : point[view.row]) + 0.5) * scale;
    const gap = 4 * scale;
    context.strokeStyle = "rgba(90, 255, 140, 0.9)";
    context.lineWidth = Math.max(1, scale / 2);
    context.beginPath();
    context.moveTo(0, y);
    context.lineTo(x - gap, y);
    context.moveTo(x + gap, y);
    context.lineTo(view.canvas.width, y);
    context.moveTo(x, 0);
    context.lineTo(x, y - gap);
    context.moveTo(x, y + gap);
    context.lineTo(x, view.canvas.height);
    context.stroke();
  }

  function drawLetters(view) {
    const context = view.context;
    const width = view.canvas.width;
    const height = view.canvas.height;
    const [top, bottom, left, right] = view.letters;
    const scale = width / view.width; // canvas pixels per voxel, the same in every view
    context.font = "bold " + Math.max(12, Math.round((scale * Math.max(size[0], size[1], size[2])) / 28)) + "px sans-serif";
    context.fillStyle = "#ffffff";
    context.strokeStyle = "#000000";
    context.lineWidth = 3;
    const place = (text, x, y, align, baseline) => {
      context.textAlign = align;
      context.textBaseline = baseline;
      context.strokeText(text, x, y);
      context.fillText(text, x, y);
    };
    place(top, width / 2, 3, "center", "top");
    place(bottom, width / 2, height - 3, "center", "bottom");
    place(left, 4, height / 2, "left", "middle");
    place(right, width - 4, height / 2, "right", "middle");
  }

  function describe() {
    const lps = apply(data.index_to_lps, point);
    let text = "x " + lps[0].toFixed(1) + "  y " + lps[1].toFixed(1) + "  z " + lps[2].toFixed(1) + " mm (LPS)";
    if (data.mri_lps_to_index) {
      const voxel = apply(data.mri_lps_to_index, lps).map(Math.round);
      text += "  ·  MRI voxel (" + voxel.join(", ") + ")";
    }
    if (pet) {
      const index = point[0] + point[1] * stride[1] + point[2] * stride[2];
      text += "  ·  PET " + format(petValue(index)) + " " + data.units;
    } else {
      text += "  ·  PET not available";
    }
    return text;
  }

  function update() {
    for (const name in VIEWS) {
      const view = VIEWS[name];
      view.slider.value = String(point[view.fixed]);
      view.output.textContent = AXIS_NAMES[view.fixed] + " " + point[view.fixed] + " / " + (size[view.fixed] - 1);
      view.slider.setAttribute("aria-valuetext", "slice " + point[view.fixed] + " of " + (size[view.fixed] - 1));
      drawPlane(view);
    }
    document.getElementById("readout").textContent = describe();
  }

  function drawLegend() {
    const canvas = document.getElementById("legend-bar");
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(canvas.width, canvas.height);
    for (let x = 0; x < canvas.width; x++) {
      const k = Math.round((x / (canvas.width - 1)) * 255) * 3;
      for (let y = 0; y < canvas.height; y++) {
        const out = (y * canvas.width + x) * 4;
        pixels.data[out] = lut[k];
        pixels.data[out + 1] = lut[k + 1];
        pixels.data[out + 2] = lut[k + 2];
        pixels.data[out + 3] = 255;
      }
    }
    context.putImageData(pixels, 0, 0);
    document.getElementById("legend-low").textContent = format(data.pet_window[0]);
    document.getElementById("legend-high").textContent = format(data.pet_window[1]) + " " + data.units;
  }

  function setUpControls() {
    const slider = document.getElementById("opacity");
    const output = document.getElementById("opacity-value");
    const changed = () => {
      opacity = Number(slider.value) / 100;
      output.textContent = slider.value + " %";
      slider.setAttribute("aria-valuetext", slider.value + " percent PET");
      update();
    };
    slider.addEventListener("input", changed);
    if (!pet) {
      slider.disabled = true;
      output.textContent = "no PET";
    } else {
      opacity = Number(slider.value) / 100;
      drawLegend();
    }
    document.querySelectorAll("button.goto").forEach((button) => {
      button.addEventListener("click", () => {
        const lps = apply(data.mri_index_to_lps, button.dataset.voxel.split(",").map(Number));
        const voxel = apply(data.lps_to_index, lps).map(Math.round);
        for (let axis = 0; axis < 3; axis++) {
          point[axis] = clamp(voxel[axis], 0, size[axis] - 1);
        }
        update();
        root.scrollIntoView({ block: "nearest" });
        VIEWS.axial.canvas.focus({ preventScroll: true });
      });
    });
  }

  async function start() {
    if (typeof DecompressionStream === "undefined") {
      fail("This browser cannot unpack the viewer's volumes (no DecompressionStream); use a current Chrome, Edge, Firefox or Safari.");
      return;
    }
    try {
      base = await inflate(data.base);
      lut = await inflate(data.lut);
      if (data.pet) {
        const planes = await inflate(data.pet); // all low bytes, then all high bytes
        const count = planes.length / 2;
        pet = new Uint16Array(count);
        for (let i = 0; i < count; i++) {
          pet[i] = planes[i] | (planes[count + i] << 8);
        }
        prepareColours();
      }
    } catch (error) {
      fail("The viewer's volumes could not be unpacked (" + error + ").");
      return;
    }
    if (base.length !== size[0] * size[1] * size[2] || (pet && pet.length !== base.length)) {
      fail("The viewer's volumes do not match their stated size.");
      return;
    }
    for (const name in VIEWS) {
      setUpView(name);
    }
    // columns as wide as the planes: one screen scale for all three views (x, x, y voxels across)
    root.querySelector(".views").style.gridTemplateColumns =
      "minmax(0, " + size[0] + "fr) minmax(0, " + size[0] + "fr) minmax(0, " + size[1] + "fr)";
    setUpControls();
    update();
    root.dataset.state = "ready";
  }

  start();
})();
